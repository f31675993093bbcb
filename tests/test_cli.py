import json
import re

import pytest

from tests.corpus import run_config, write_corpus
from transformer.cli import _parser, main
from transformer.config import RunConfig
from transformer.training.trainer import train


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    corpus = write_corpus(tmp_path_factory.mktemp("corpus"))
    out = tmp_path_factory.mktemp("run") / "model"
    train(RunConfig.from_dict(run_config(corpus, max_steps=4, eval_every=4)), out, progress_bar=False)
    return out


def _subparsers(parser):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", s) for n, s in _subparsers(sub))


def test_every_command_help_lists_all_its_options(capsys):
    commands = dict(_subparsers(_parser()))
    assert {"data list", "data export", "train", "translate", "evaluate"} <= set(commands)
    for name, sub in commands.items():
        with pytest.raises(SystemExit):
            main([*name.split(), "--help"])
        text = capsys.readouterr().out
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in text, f"`transformer {name} --help` does not mention {flag}"


def test_translate_reads_stdin_and_writes_one_line_per_line(model_dir, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("haus baum\n\nwort gott licht\n"))
    assert main(["translate", "--model", str(model_dir), "--beam", "1"]) == 0
    assert len(capsys.readouterr().out.split("\n")) == 4  # three lines, the empty one kept, and a final newline


def test_evaluate_prints_signatures_and_ends_with_one_json_line(model_dir, capsys):
    assert main(["evaluate", "--model", str(model_dir), "--split", "test", "--limit", "5", "--beam", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any(re.match(r"BLEU = ", line) for line in out)
    assert any("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" in line for line in out)
    assert any(line.startswith("chrF2 = ") for line in out)
    record = json.loads(out[-1])
    assert record["n"] == 5 and record["beam"] == 2 and set(record) >= {"bleu", "chrf", "n", "beam"}


def test_user_errors_exit_2_with_the_message(tmp_path, capsys):
    assert main(["translate", "--model", str(tmp_path)]) == 2
    assert "is not a model directory" in capsys.readouterr().err
    assert main(["data", "export", "bible", "--src", "xx", "--tgt", "2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'xx'" in err and "e (German)" in err
    config = tmp_path / "bad.yaml"
    config.write_text("model: {preset: tiny}\ntrain: {max_step: 3}\n")
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "unknown config key train.max_step; did you mean train.max_steps?" in capsys.readouterr().err
