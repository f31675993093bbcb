"""The global flags of every command, and the logging they set up.

    -v          INFO on stderr: what training reports (validation loss and BLEU, checkpoints, averaging)
    -vv         DEBUG, for the `transformer` loggers only
    --log FILE  the log also goes to FILE (appended, with timestamps), at INFO, or DEBUG with -vv

Other libraries' loggers (matplotlib, PIL, urllib3, filelock, httpx, huggingface_hub, fsspec, ...) stay at
WARNING whatever the flags. Both flags are accepted before the subcommand (`transformer -v train ...`) and
after it (`transformer train cfg.yaml -v --log run.log`); the copies a subcommand accepts have their own
names in the parsed arguments, so that a value given before the subcommand is never overwritten by them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from transformer.cli_io import check_output

OURS = "transformer"  # the logger every module's logging.getLogger(__name__) descends from
CONSOLE_FORMAT = "%(levelname)s %(name)s: %(message)s"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_AFTER = "_after_subcommand"  # suffix of the names of the copies a subcommand accepts

VERBOSE_HELP = ("more log messages on stderr: -v for INFO (the validation loss and BLEU while training), -vv for "
                "DEBUG of transformer's own loggers (other libraries stay at WARNING)")
LOG_HELP = "also append the log to FILE, with timestamps (INFO, or DEBUG with -vv); its directory must exist"


def add_global_flags(parser: argparse.ArgumentParser) -> None:
    """-v/--verbose and --log on the top-level parser."""
    parser.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    parser.add_argument("--log", type=Path, metavar="FILE", help=LOG_HELP)


def add_global_flags_to_subcommands(parser: argparse.ArgumentParser) -> None:
    """A copy of -v/--verbose and --log on every subcommand's parser; call it once all are registered."""
    for sub in _subcommand_parsers(parser):
        sub.add_argument("-v", "--verbose", action="count", dest="verbose" + _AFTER, default=argparse.SUPPRESS,
                         help=VERBOSE_HELP)
        sub.add_argument("--log", type=Path, metavar="FILE", dest="log" + _AFTER, default=argparse.SUPPRESS,
                         help=LOG_HELP)


def _subcommand_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below `parser` (subcommands of subcommands too), each once (aliases share a parser)."""
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if all(sub is not seen for seen in found):
                    found.extend([sub, *_subcommand_parsers(sub)])
    return found


def logging_options(args: argparse.Namespace) -> tuple[int, Path | None]:
    """(verbosity, log file) of parsed arguments: the -v given before and after the subcommand add up; a --log
    after it wins over one before it. The copies' entries are removed from `args`."""
    verbose = args.verbose + vars(args).pop("verbose" + _AFTER, 0)
    log_file = vars(args).pop("log" + _AFTER, None) or args.log
    args.verbose, args.log = verbose, log_file
    return verbose, log_file


class _OursOrWarnings(logging.Filter):
    """Pass every record of the `transformer` loggers, and other loggers' records from WARNING up."""

    def filter(self, record: logging.LogRecord) -> bool:
        ours = record.name == OURS or record.name.startswith(OURS + ".")
        return ours or record.levelno >= logging.WARNING


def _handler(handler: logging.Handler, level: int, fmt: str) -> logging.Handler:
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(_OursOrWarnings())
    return handler


@contextlib.contextmanager
def configured_logging(verbose: int, log_file: Path | None = None) -> Iterator[None]:
    """Log to stderr (WARNING; INFO with verbose 1; DEBUG with 2 or more) and to `log_file` (INFO, or DEBUG with
    verbose 2) while the block runs; the handlers are removed and the levels restored after it. A `log_file`
    that cannot be written (a directory, or in a missing one) is a ValueError before anything is logged."""
    check_output(log_file, "--log")
    console_level = logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING
    handlers = [_handler(logging.StreamHandler(sys.stderr), console_level, CONSOLE_FORMAT)]
    if log_file is not None:
        file_level = logging.DEBUG if verbose >= 2 else logging.INFO
        handlers.append(_handler(logging.FileHandler(log_file, encoding="utf-8"), file_level, FILE_FORMAT))
    root, ours = logging.getLogger(), logging.getLogger(OURS)
    saved_level = ours.level
    ours.setLevel(min(handler.level for handler in handlers))
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        ours.setLevel(saved_level)
