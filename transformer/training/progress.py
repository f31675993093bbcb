"""The progress record of a training run (saved in train_state.pt), and the checks of a run directory before
training starts or resumes in it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from transformer.config import RunConfig, TrainConfig
from transformer.model_dir import read_config


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept on disk."""

    @classmethod
    def at(cls, value: float, step: int, lr: float, t: TrainConfig, out: Path) -> NonFiniteLossError:
        remedies = ["a lower train.lr", "a longer train.warmup",
                    f"a smaller train.clip_norm (now {t.clip_norm})" if t.clip_norm else "train.clip_norm=1.0"]
        if t.bf16:
            remedies.append("train.bf16=false (fp32 throughout)")
        return cls(
            f"loss became {value} at step {step} (learning rate {lr:.3g}); stopped without saving, so the last "
            f"good checkpoint in {out} is intact. Try {', '.join(remedies[:-1])} or {remedies[-1]}; then --resume"
        )


@dataclass
class Progress:
    """Where training stands; saved in train_state.pt so that --resume continues exactly."""

    step: int = 0
    epoch: int = 0
    next_batch: int = 0  # index of the next micro-batch within the epoch
    train_seconds: float = 0.0
    best_score: float | None = None  # the best valid_<metric> so far (the task's metric)
    best_step: int = 0
    evals_since_best: int = 0  # validations in a row that did not beat the best (train.patience stops on it)
    checkpoints: list[str] = field(default_factory=list)
    snapshots_done: list[float] = field(default_factory=list)
    metrics_bytes: int | None = 0  # the size of metrics.jsonl when this state was saved (None: not recorded)
    finished: bool = False  # the end of the run (checkpoint averaging, loss.png) is done


def check_out_dir(out: Path, config: RunConfig, resume: bool) -> None:
    """Refuse to resume what is not there or differs, and to start a run over an existing one."""
    state = out / "train_state.pt"
    if resume:
        if not state.is_file():
            raise FileNotFoundError(f"cannot resume: {state} does not exist; drop --resume to start a new run")
        saved = read_config(out)
        changed = {k for k, v in vars(config.model).items()
                   if k not in ("src_vocab_size", "tgt_vocab_size", "pad_id", "bos_id", "eos_id", "n_classes",
                                "labels")  # resolved against the tokenizer and the data
                   and getattr(saved.model, k) != v}
        if changed or saved.data != config.data or saved.task != config.task:
            raise ValueError(
                f"cannot resume {out} with a different task, model or data config (model keys differ: "
                f"{sorted(changed)}, data differs: {saved.data != config.data}, task: {saved.task} -> "
                f"{config.task}); use the run's own config.yaml"
            )
    elif state.exists() or (out / "model.safetensors").exists():
        raise ValueError(
            f"{out} already holds a training run; pass --resume to continue it, or choose another --out"
        )


def progress_fields(saved: dict) -> dict:
    """A saved progress record as Progress's fields: a train_state.pt of a translation run written before the
    loop served every task holds `best_bleu` (-1 for none) where Progress now has `best_score`."""
    saved = dict(saved)
    saved.setdefault("metrics_bytes", None)  # not recorded before: metrics.jsonl is kept as it is
    saved.setdefault("finished", True)  # before this field, a saved state at max_steps was a finished run
    if "best_bleu" in saved:
        bleu = saved.pop("best_bleu")
        saved.setdefault("best_score", None if bleu < 0 else bleu)
    return saved
