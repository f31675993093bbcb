"""What the commands read and write for a user: input lines from a file or stdin, and output paths checked
before any work starts, so that a bad path never costs a decoding run."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

STDIN = "-"  # --input -: read stdin


def reads_stdin(path: Path | None) -> bool:
    """Whether an --input value means stdin: none given, or `-`."""
    return path is None or str(path) == STDIN


def stream_lines(path: Path | None) -> Iterator[str]:
    """The lines of `path`, else of stdin (`path` None or `-`), read one at a time as they arrive (UTF-8, line
    ends removed, empty lines kept; a bad byte is named by file, or <stdin>, and line). A missing file or a
    directory is refused now, before the first line is asked for."""
    from transformer.data.corpora import check_text_file, decode_lines

    if reads_stdin(path):
        binary = getattr(sys.stdin, "buffer", None)
        if binary is None:  # a text stream put in place of stdin (tests, embedding applications)
            return (line.rstrip("\r\n") for line in sys.stdin)
        return decode_lines(binary, "<stdin>")
    return _file_lines(check_text_file(path))


def _file_lines(path: Path) -> Iterator[str]:
    from transformer.data.corpora import decode_lines

    with path.open("rb") as f:
        yield from decode_lines(f, path)


def input_lines(path: Path | None) -> list[str]:
    """All the lines of `path`, else of stdin (`path` None or `-`), as `stream_lines` reads them."""
    return list(stream_lines(path))


def check_output(path: Path | None, flag: str = "--output") -> None:
    """Raise ValueError now if `path` could not be written later: a directory, or in a directory that is missing."""
    if path is None:
        return
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a directory; name a file to write")
    if not path.parent.is_dir():
        raise ValueError(f"{flag} {path}: the directory {path.parent} does not exist; create it first "
                         f"(mkdir -p {path.parent})")
