"""`transformer experiment NAME --quick`: each experiment writes its files with the promised schema, resumes from
its saved parts, and the report is written from results; the findings and timings are never checked here."""

from __future__ import annotations

import json

import pytest
import torch

from transformer.cli import main
from transformer.cli_experiment import EXPERIMENT_NAMES
from transformer.experiments import EXPERIMENTS
from transformer.experiments.base import RESULT_KEYS, markdown_table
from transformer.experiments.report import write_report

PNG = b"\x89PNG\r\n\x1a\n"


def test_the_command_lists_every_experiment_in_the_report_order():
    assert list(EXPERIMENT_NAMES) == list(EXPERIMENTS)
    assert len(EXPERIMENTS) == 8


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("experiments")


@pytest.mark.parametrize("name", EXPERIMENT_NAMES)
def test_quick_run_writes_table_plot_and_result(name, out, capsys):
    assert main(["experiment", name, "--quick", "--out", str(out), "--no-progress"]) == 0
    folder = out / name
    result = json.loads((folder / "result.json").read_text())
    assert tuple(result) == RESULT_KEYS
    assert result["name"] == name and result["quick"] is True and result["plot"] == "plot.png"
    assert result["command"] == f"transformer experiment {name} --quick --out {out}"
    assert result["claim"] == EXPERIMENTS[name].claim and result["claim"]
    assert result["rows"] and all(len(row) == len(result["columns"]) for row in result["rows"])
    assert isinstance(result["reading"], str) and len(result["reading"]) > 80
    assert (folder / "table.md").read_text() == markdown_table(result["columns"], result["rows"])
    assert (folder / "plot.png").read_bytes().startswith(PNG)
    assert list((folder / "parts" / "quick").glob("*.json"))
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["experiment"] == name and printed["rows"] == len(result["rows"])


def test_a_second_run_resumes_from_the_saved_parts(out, monkeypatch):
    """The parts of the first run are read back, not recomputed: the table is the same, and a part computed
    again would have to train (made impossible here)."""
    assert main(["experiment", "vanishing-gradients", "--quick", "--out", str(out), "--no-progress"]) == 0
    first = json.loads((out / "vanishing-gradients" / "result.json").read_text())

    def no_training(*args, **kwargs):
        raise AssertionError("a saved part was computed again")

    monkeypatch.setattr(torch.Tensor, "backward", no_training)
    assert main(["experiment", "vanishing-gradients", "--quick", "--out", str(out), "--no-progress"]) == 0
    again = json.loads((out / "vanishing-gradients" / "result.json").read_text())
    assert again["rows"] == first["rows"] and again["reading"] == first["reading"]


def test_quick_results_never_go_to_the_committed_folder(capsys):
    from transformer.experiments.report import COMMITTED

    assert main(["experiment", "order", "--quick", "--out", str(COMMITTED)]) == 2
    assert "--quick results never go to docs/experiments" in capsys.readouterr().err


def test_bad_minutes_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment", "translation", "--minutes", "15,x"])
    assert exit_info.value.code == 2
    assert "--minutes '15,x': give positive whole minutes" in capsys.readouterr().err


def test_report_has_a_section_per_experiment_from_full_results(tmp_path):
    """write_report: each experiment's title, claim, command, table, plot and reading; a missing or --quick
    result is reported as not run."""
    folder = tmp_path / "order"
    folder.mkdir()
    result = {"name": "order", "title": "t", "claim": "c", "command": "transformer experiment order --out X",
              "quick": False, "columns": ["a", "b"], "rows": [[1, 2.5]], "reading": "what the numbers say",
              "details": {}, "plot": "plot.png", "seconds": 120.0}
    (folder / "result.json").write_text(json.dumps(result))
    (tmp_path / "parallel").mkdir()
    (tmp_path / "parallel" / "result.json").write_text(json.dumps({**result, "name": "parallel", "quick": True}))
    text = write_report(EXPERIMENTS, tmp_path, tmp_path / "EXPERIMENTS.md").read_text()
    order = text.split(f"## {EXPERIMENTS['order'].title}")[1].split("\n## ")[0]
    assert f"> {EXPERIMENTS['order'].claim}" in order
    assert "transformer experiment order --out X" in order and "| 1 | 2.5 |" in order
    assert "![" in order and "experiments/order/plot.png" in order and "what the numbers say" in order
    assert text.count("## ") == 8
    parallel = text.split(f"## {EXPERIMENTS['parallel'].title}")[1].split("\n## ")[0]
    assert "Not run yet" in parallel
