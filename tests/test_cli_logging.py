"""The command line people expect: -v / -vv / --log before or after the subcommand, help on every option, and a
top-level --help whose examples are real command lines."""

import argparse
import json
import logging
import re
import shlex
from pathlib import Path

import pytest
import yaml

from tests.corpus import run_config, write_corpus
from transformer import cli
from transformer.cli import _parser, main
from transformer.cli_logging import logging_options


def _parsers(parser, name="transformer"):
    """(command name, parser) of the top-level parser and of every subcommand's, recursively."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_option_of_every_subcommand_has_help():
    seen = 0
    for name, parser in _parsers(_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            label = "/".join(action.option_strings) or action.dest
            assert action.help and action.help != argparse.SUPPRESS, f"`{name}`: {label} has no help text"
            seen += 1
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:  # the one-line description of each subcommand
                    assert choice.help, f"`{name} {choice.dest}` has no help text"
    assert seen > 60  # the walk reached the subcommands' options, not just the top level


def test_top_level_help_shows_examples_that_are_real_command_lines(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    examples = [line.strip() for line in cli.EXAMPLES.splitlines() if line.startswith("  transformer ")]
    for line in examples:
        assert f"  {line}\n" in text  # RawDescriptionHelpFormatter kept the line as written
        args = _parser().parse_args(shlex.split(line)[1:])  # each parses: real commands, real options
        assert args.command == shlex.split(line)[1]
    commands = {" ".join(shlex.split(line)[1:3 if line.startswith("transformer data ") else 2]) for line in examples}
    assert {"data export", "train", "translate", "evaluate", "generate", "import-hf"} <= commands


@pytest.mark.parametrize(
    "argv, verbose, log",
    [
        (["train", "c.yaml"], 0, None),
        (["-v", "train", "c.yaml"], 1, None),
        (["train", "c.yaml", "-vv"], 2, None),
        (["-v", "train", "c.yaml", "-v"], 2, None),  # before and after the subcommand add up
        (["-v", "--log", "a.log", "train", "c.yaml"], 1, "a.log"),  # not overwritten by the subcommand's copy
        (["train", "c.yaml", "-v", "--log", "run.log"], 1, "run.log"),
        (["--log", "a.log", "train", "c.yaml", "--log", "b.log"], 0, "b.log"),  # the later one wins
        (["data", "export", "bible", "--src", "e", "--tgt", "2", "--out", "d", "-vv", "--log", "x.log"], 2, "x.log"),
    ],
)
def test_global_flags_before_or_after_the_subcommand(argv, verbose, log):
    args = _parser().parse_args(argv)
    assert logging_options(args) == (verbose, None if log is None else Path(log))
    assert (args.verbose, args.log) == (verbose, None if log is None else Path(log))


def _logging_command(monkeypatch):
    """Make `transformer data list` log one record of each level from our loggers and from third-party ones."""
    calls = []

    def fake(args):
        calls.append(args)
        for name in ("transformer.training.trainer", "matplotlib.font_manager", "PIL.PngImagePlugin", "urllib3",
                     "filelock", "httpx", "huggingface_hub.file_download", "fsspec"):
            logger = logging.getLogger(name)
            for level in (logging.DEBUG, logging.INFO, logging.WARNING):
                logger.log(level, "%s from %s", logging.getLevelName(level).lower(), name)

    monkeypatch.setattr(cli, "_cmd_data", fake)
    return calls


def _records(text: str) -> set[tuple[str, str]]:
    """(level, logger) of each record in a log text."""
    return {(m.group(1), m.group(2)) for m in re.finditer(r"(DEBUG|INFO|WARNING) ([\w.]+): ", text)}


@pytest.mark.parametrize("flags, levels", [([], {"WARNING"}), (["-v"], {"INFO", "WARNING"}),
                                           (["-vv"], {"DEBUG", "INFO", "WARNING"})])
def test_console_levels_are_ours_only_and_third_party_stays_at_warning(flags, levels, monkeypatch, capsys):
    _logging_command(monkeypatch)
    assert main([*flags, "data", "list"]) == 0
    records = _records(capsys.readouterr().err)
    assert {level for level, name in records if name.startswith("transformer")} == levels
    assert {level for level, name in records if not name.startswith("transformer")} == {"WARNING"}
    assert len({name for _, name in records}) == 8  # every logger's warning got through


def test_log_file_has_timestamps_at_info_or_the_chosen_level(tmp_path, monkeypatch, capsys):
    _logging_command(monkeypatch)
    log = tmp_path / "run.log"
    assert main(["data", "list", "--log", str(log)]) == 0  # --log alone: INFO in the file, WARNING on the console
    console, text = _records(capsys.readouterr().err), log.read_text(encoding="utf-8")
    assert {level for level, _ in console} == {"WARNING"}
    assert {level for level, name in _records(text) if name.startswith("transformer")} == {"INFO", "WARNING"}
    assert {level for level, name in _records(text) if not name.startswith("transformer")} == {"WARNING"}
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", line) for line in text.splitlines())
    log.unlink()
    assert main(["-vv", "data", "list", "--log", str(log)]) == 0
    text = log.read_text(encoding="utf-8")
    assert ("DEBUG", "transformer.training.trainer") in _records(text)
    assert {level for level, name in _records(text) if not name.startswith("transformer")} == {"WARNING"}


def test_logging_is_undone_after_the_command(tmp_path, monkeypatch):
    _logging_command(monkeypatch)
    root, ours = logging.getLogger(), logging.getLogger("transformer")
    before = (list(root.handlers), ours.level)
    assert main(["-vv", "data", "list", "--log", str(tmp_path / "x.log")]) == 0
    assert (list(root.handlers), ours.level) == before


def test_log_in_a_missing_directory_is_a_one_line_error_before_any_work(tmp_path, monkeypatch, capsys):
    calls = _logging_command(monkeypatch)
    log = tmp_path / "missing" / "run.log"
    assert main(["data", "list", "--log", str(log)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --log {log}: the directory {log.parent} does not exist") and err.count("\n") == 1
    assert not calls and not log.parent.exists()


def test_train_with_v_after_the_subcommand_shows_validation_records_and_logs_them(tmp_path, capsys):
    corpus = write_corpus(tmp_path)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(run_config(corpus, max_steps=2, eval_every=2)), encoding="utf-8")
    log = tmp_path / "train.log"
    argv = ["train", str(config), "--out", str(tmp_path / "run"), "--no-progress", "-v", "--log", str(log)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    valid = [line for line in captured.err.splitlines() if line.startswith("INFO transformer.") and "valid_" in line]
    assert valid, captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["steps"] == 2
    text = log.read_text(encoding="utf-8")
    assert any(re.match(r"\d{4}-\d\d-\d\d .* INFO transformer\.\S+: .*valid_", line) for line in text.splitlines())
    assert " DEBUG " not in text
