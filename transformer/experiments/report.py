"""docs/EXPERIMENTS.md, written from the result.json files of the full runs in docs/experiments (never by hand)."""

from __future__ import annotations

import json
from pathlib import Path

from transformer.experiments.base import PLOT_FILE, RESULT_FILE, markdown_table
from transformer.safe_files import atomic_write_text

DOCS = Path(__file__).resolve().parents[2] / "docs"
COMMITTED = DOCS / "experiments"
REPORT = DOCS / "EXPERIMENTS.md"

HEADER = """# Experiments: the notes' claims about what came before the Transformer, measured

Written by `transformer experiment NAME --out docs/experiments` from the results it saved in
`docs/experiments/NAME/` (result.json, table.md, plot.png); do not edit it by hand. Every section names the
command that made it, on this project's 2-core CPU machine with nothing else running. The readings are written
by the experiments' code from the numbers in their tables, so they say what the numbers say, including where a
claim does not hold. `--quick` runs the same code at toy sizes, in seconds: the tests run it, and its numbers
mean nothing.
"""


def is_committed_dir(out_root: Path) -> bool:
    """Whether `out_root` is docs/experiments of this checkout (where full runs regenerate EXPERIMENTS.md)."""
    return out_root.resolve() == COMMITTED.resolve()


def section(name: str, title: str, claim: str, result: dict | None) -> str:
    lines = [f"## {title}", "", f"> {claim}", ""]
    if result is None:
        lines += [f"Not run yet: `transformer experiment {name} --out docs/experiments`.", ""]
        return "\n".join(lines)
    lines += ["```bash", result["command"], "```", "", markdown_table(result["columns"], result["rows"]),
              f"![{title}](experiments/{name}/{PLOT_FILE})", "", result["reading"],
              "", f"_Compute: {result['seconds'] / 60:.1f} minutes, all parts together (a translation model shared "
              "with another experiment counts where it was trained)._", ""]
    return "\n".join(lines)


def write_report(experiments: dict, root: Path = COMMITTED, report: Path = REPORT) -> Path:
    """EXPERIMENTS.md: a section per experiment, in `experiments`' order, from root/NAME/result.json."""
    sections = []
    for name, experiment in experiments.items():
        path = root / name / RESULT_FILE
        result = json.loads(path.read_text()) if path.is_file() else None
        if result is not None and result.get("quick"):
            result = None  # a --quick result never stands in the committed report
        sections.append(section(name, experiment.title, experiment.claim, result))
    atomic_write_text(report, HEADER + "\n" + "\n".join(sections))
    return report
