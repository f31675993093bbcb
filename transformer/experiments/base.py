"""What every experiment of `transformer experiment NAME` shares: resumable parts, and the files it writes.

An experiment is a set of parts (one model trained at one length, one seed, ...), each a JSON record saved in
`OUT/NAME/parts/` as soon as it is computed: a run stopped at any moment and started again computes only the
parts it has not saved. `--quick` parts are kept apart from full ones (`parts/quick/`). When every part is in,
the experiment writes:

    OUT/NAME/result.json   the claim, the command, the table (columns and rows), the reading, the details
    OUT/NAME/table.md      the table in markdown
    OUT/NAME/plot.png      its figure

and a full run into docs/experiments also rewrites docs/EXPERIMENTS.md (report.py).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformer.safe_files import atomic_write_text

logger = logging.getLogger(__name__)

RESULT_FILE, TABLE_FILE, PLOT_FILE = "result.json", "table.md", "plot.png"
RESULT_KEYS = ("name", "title", "claim", "command", "quick", "columns", "rows", "reading", "details", "plot",
               "seconds")


@dataclass
class Outcome:
    """What an experiment found: a table (rows of `columns`), one paragraph reading it, and any details worth
    keeping in result.json (per-seed values, settings)."""

    columns: list[str]
    rows: list[list[Any]]
    reading: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """Where an experiment keeps its parts and how large it runs (`quick`: seconds, for the tests)."""

    out: Path  # OUT/NAME
    quick: bool = False
    progress: bool = True
    seed: int = 0
    part_seconds: float = 0.0  # the compute time of every part used, whenever it was computed


    @property
    def parts_dir(self) -> Path:
        return self.out / "parts" / ("quick" if self.quick else "full")

    def part(self, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The saved record `key`, or compute it, save it atomically and return it."""
        path = self.parts_dir / f"{key}.json"
        if path.is_file():
            record = json.loads(path.read_text())
        else:
            start = time.perf_counter()
            record = compute()
            record.setdefault("seconds", round(time.perf_counter() - start, 2))
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(record, indent=1) + "\n")
            logger.info("%s: part %s saved", self.out.name, key)
        self.part_seconds += record.get("seconds", 0.0)
        return record

    def pick(self, quick: Any, full: Any) -> Any:
        """`quick` in a --quick run, else `full`: the sizes of an experiment in one place."""
        return quick if self.quick else full


class Experiment:
    """One claim of the notes and the measurement that tests it. Subclasses set the class attributes and
    implement `run` (the parts and the table) and `plot` (the figure, from the Outcome alone)."""

    name: str = ""
    title: str = ""
    claim: str = ""  # the claim, as issue #14 states it

    def run(self, ctx: Context) -> Outcome:
        raise NotImplementedError

    def plot(self, outcome: Outcome, path: Path) -> None:
        raise NotImplementedError


def command_line(name: str, quick: bool, out: Path) -> str:
    return f"transformer experiment {name}{' --quick' if quick else ''} --out {out}"


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "n/a" if math.isnan(value) else f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def run_experiment(experiment: Experiment, out_root: Path, quick: bool, progress: bool = True,
                   options: str = "") -> dict[str, Any]:
    """Run (or resume) `experiment` into out_root/NAME; write result.json, table.md and plot.png; return the
    result record. `options` are the command's further arguments, as the result's command shows them."""
    out = out_root / experiment.name
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(out, quick=quick, progress=progress)
    outcome = experiment.run(ctx)
    experiment.plot(outcome, out / PLOT_FILE)
    result = {
        "name": experiment.name, "title": experiment.title, "claim": experiment.claim,
        "command": command_line(experiment.name, quick, out_root) + (f" {options}" if options else ""),
        "quick": quick, "columns": outcome.columns, "rows": outcome.rows, "reading": outcome.reading,
        "details": outcome.details, "plot": PLOT_FILE, "seconds": round(ctx.part_seconds, 1),
    }
    atomic_write_text(out / RESULT_FILE, json.dumps(result, indent=1) + "\n")
    atomic_write_text(out / TABLE_FILE, markdown_table(outcome.columns, outcome.rows))
    return result


def spread(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation; 0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0)


def mean_sd(values: Sequence[float], digits: int = 3) -> str:
    """'mean ± sd' of several seeds' values (the mean alone for one)."""
    mean, sd = spread(values)
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ± {sd:.{digits}f}"
