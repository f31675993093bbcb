"""Fuzzing the corpus readers with random bytes (issue #16, item 4): each file either reads, line for line as
Python's own UTF-8 decoding splits it, or is refused with a ValueError naming the file and line."""

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transformer.data.corpora import read_lines, read_parallel_files, read_text, read_tsv

LINES = st.lists(st.one_of(st.binary(max_size=40), st.text(max_size=40).map(lambda t: t.encode("utf-8"))),
                 max_size=8)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=LINES, ending=st.sampled_from([b"\n", b"\r\n"]))
def test_random_bytes_read_or_are_refused_by_file_and_line(lines, ending):
    data = ending.join(lines)
    with tempfile.TemporaryDirectory() as root:
        path = Path(root) / "input.txt"
        path.write_bytes(data)
        try:
            expected = data.decode("utf-8")
        except UnicodeDecodeError:
            with pytest.raises(ValueError, match=rf"{path}:\d+: bytes .* are not UTF-8; convert the file"):
                read_lines(path)
            return
        got = read_lines(path)
        # lines end at "\n" only (not at the other characters str.splitlines splits on); "\r"s before it go
        reference = [line.rstrip("\r") for line in expected.removeprefix("\ufeff").split("\n")] if expected else []
        if expected.endswith("\n"):
            reference.pop()  # the final line end ends a line; it does not start an empty one
        assert got == reference
        assert read_text(path) == [line for line in got if line.strip()]
        for reader in (lambda: read_tsv(path), lambda: read_parallel_files(path, path)):
            try:
                corpus = reader()
            except ValueError as error:
                assert str(path) in str(error)
            else:
                assert len(corpus.src) == len(corpus.tgt) == len(got)
