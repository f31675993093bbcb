"""What a training run reports: metrics.jsonl, the console progress and, optionally, TensorBoard.

metrics.jsonl holds one JSON record a line. Its size is saved with each train_state.pt, and a resumed run cuts
the file back to that size, so records written after the last saved state (by a run that was killed) are not
kept twice: every step appears once, whatever happened to the process.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from tqdm import tqdm

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class RunLog:
    """metrics.jsonl, the progress display and the TensorBoard writer of the run in `out`.

    On a terminal the progress is a tqdm bar; elsewhere (a log file, CI) it is one line on stderr per log
    interval. `progress=False` shows neither.
    """

    def __init__(self, out: Path, *, total_steps: int | None, progress: bool, tensorboard: bool):
        self.path = out / METRICS_FILE
        self.total_steps = total_steps
        self.progress = progress
        self.bar: tqdm | None = None
        self.tensorboard_dir = out / "tensorboard" if tensorboard else None
        self.writer = None
        if tensorboard:
            _require_tensorboard()

    def start(self, step: int, saved_bytes: int | None) -> None:
        """Begin at update `step`, keeping the first `saved_bytes` bytes of metrics.jsonl: 0 for a new run, the
        size saved with the state for a resumed one (None: a train_state.pt from before sizes were saved)."""
        if saved_bytes is not None and self.path.exists() and self.path.stat().st_size > saved_bytes:
            with open(self.path, "rb+") as handle:
                handle.truncate(saved_bytes)
            logger.info("cut %s back to the %d bytes of step %d's saved state", self.path, saved_bytes, step)
        if self.progress and sys.stderr.isatty():
            self.bar = tqdm(total=self.total_steps, initial=step, desc="train", unit="step", dynamic_ncols=True)
        if self.tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops the events a killed run wrote after the state it resumes from
            self.writer = SummaryWriter(str(self.tensorboard_dir), purge_step=step if step else None)

    def record(self, record: dict) -> None:
        """Append `record` (it has a "step") to metrics.jsonl, log it at INFO and send its numbers to TensorBoard."""
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        logger.info("%s", record)
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(key, value, record["step"])

    def durable_size(self) -> int:
        """Flush metrics.jsonl (and TensorBoard) to disk and return its size, to be saved with the state."""
        if self.writer is not None:
            self.writer.flush()
        if not self.path.exists():
            return 0
        with open(self.path, "rb") as handle:
            os.fsync(handle.fileno())
        return self.path.stat().st_size

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def show(self, step: int, values: dict) -> None:
        """The latest figures: the bar's postfix on a terminal, else one line on stderr."""
        if self.bar is not None:
            self.bar.set_postfix(values)
        elif self.progress:
            of = f"/{self.total_steps}" if self.total_steps else ""
            print(f"train step {step}{of}: " + " ".join(f"{k} {v}" for k, v in values.items()), file=sys.stderr,
                  flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _require_tensorboard() -> None:
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
    except ModuleNotFoundError:
        raise ModuleNotFoundError("train.tensorboard=true needs the tensorboard package: pip install tensorboard "
                                  "(or 'transformer[tensorboard]'), or set train.tensorboard=false") from None
