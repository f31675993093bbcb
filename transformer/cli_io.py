"""What the commands read and write for a user: input lines from a file or stdin, and output paths checked
before any work starts, so that a bad path never costs a decoding run."""

from __future__ import annotations

import sys
from pathlib import Path


def input_lines(path: Path | None) -> list[str]:
    """The lines of `path` (UTF-8, empty lines kept; a bad byte is named by file and line), else of stdin."""
    if path is None:
        return sys.stdin.read().splitlines()
    from transformer.data.corpora import read_lines

    return read_lines(path)


def check_output(path: Path | None, flag: str = "--output") -> None:
    """Raise ValueError now if `path` could not be written later: a directory, or in a directory that is missing."""
    if path is None:
        return
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a directory; name a file to write")
    if not path.parent.is_dir():
        raise ValueError(f"{flag} {path}: the directory {path.parent} does not exist; create it first "
                         f"(mkdir -p {path.parent})")
