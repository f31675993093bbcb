"""Corpora larger than memory: `transformer prepare` tokenizes a translation corpus once into a cache directory,
and `data.corpus: prepared` trains on it without holding the text (or Python lists of all ids) in RAM.

The cache (FORMAT, VERSION):
  train.src.bin, train.tgt.bin   the token ids of every non-blank train pair, a side a file, back to back
                                 (uint16 when the vocabulary fits, else uint32), read back as read-only numpy
                                 memmaps: processes on one machine share the pages
  train.src.idx.npy, ...tgt...   (pairs, 2) int64: each pair's offset into the .bin and its length in tokens
  valid.json, test.json          the valid and test pairs as text (small; BLEU needs the text), when the
                                 config names them
  tokenizer.json                 the BPE trained on the train text exactly as a run on the text trains it
  prepared.json                  format and version, the data config it was made from, vocabulary size, dtype,
                                 the tokenizer's sha256, counts (read, dropped blank, pairs, tokens, dropped at
                                 the config's max_len); written last

What a run filters by data.max_len (and pairs whose source encodes to nothing) it filters when it opens the
cache, from the index lengths: one cache serves any max_len, and its batches are the batches of the text.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from transformer.config import SPLIT_NAMES, DataConfig, to_dict
from transformer.data.batching import report_dropped
from transformer.data.corpora import ParallelCorpus, check_text_file, decode_lines, filter_pairs, load_bible
from transformer.data.tokenizer import TOKENIZER_FILE, Tokenizer, train_bpe

logger = logging.getLogger(__name__)

__all__ = ["MANIFEST", "PreparedCorpus", "PreparedPairs", "load_prepared_split", "prepare"]

FORMAT, VERSION = "transformer-prepared", 1
MANIFEST = "prepared.json"
TOKENIZATION_KEYS = ("vocab_size", "min_frequency", "split_han")  # the data keys the cached ids depend on
SIDES = ("src", "tgt")
CHUNK = 8192  # pairs encoded at a time
_INDEX_CHUNK = 1 << 20


# --- reading the text, one pair at a time --------------------------------------------------------------------
def _lines(path: str) -> Iterator[str]:
    with check_text_file(path).open("rb") as f:
        yield from decode_lines(f, path)


def _parallel_files(src_path: str, tgt_path: str) -> Iterator[tuple[str, str]]:
    src, tgt = _lines(src_path), _lines(tgt_path)
    for n, pair in enumerate(itertools.zip_longest(src, tgt), start=1):
        if None in pair:  # the shorter file has n - 1 lines; count the rest of the longer one
            longer = n + sum(1 for _ in (src if pair[1] is None else tgt))
            n_src, n_tgt = (longer, n - 1) if pair[1] is None else (n - 1, longer)
            raise ValueError(f"Parallel files differ in length: {src_path} has {n_src} lines, {tgt_path} has "
                             f"{n_tgt}; each line of one must translate the same line of the other")
        yield pair  # type: ignore[misc]


def _tsv(path: str) -> Iterator[tuple[str, str]]:
    for number, line in enumerate(_lines(path), start=1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise ValueError(f"{path}:{number}: expected 2 tab-separated columns (source, target), found "
                             f"{len(fields)}; remove extra tabs inside the text")
        yield fields[0], fields[1]


def _check_corpus(data: DataConfig) -> None:
    if data.corpus not in ("bible", "files", "tsv"):
        raise ValueError(f"transformer prepare reads a translation corpus, data.corpus='bible', 'files' or 'tsv', "
                         f"not {data.corpus!r}; set data.corpus in the config")


def stream_pairs(data: DataConfig, split: str) -> Iterator[tuple[str, str]] | None:
    """The (source, target) pairs of one split as the corpus holds them, read lazily (files line by line);
    None if the config names no file for the split."""
    _check_corpus(data)
    if data.corpus == "bible":  # ~30,000 verses: read at once
        return iter(load_bible(data.src, data.tgt, split, data.bible_split))
    if data.corpus == "files":
        src, tgt = getattr(data, f"{split}_src"), getattr(data, f"{split}_tgt")
        return _parallel_files(src, tgt) if src and tgt else None
    path = getattr(data, f"{split}_tsv")
    return _tsv(path) if path else None


def _non_blank(pairs: Iterator[tuple[str, str]], counts: dict[str, int]) -> Iterator[tuple[str, str]]:
    """`pairs` without those with a blank side (as filter_pairs drops them), counted in `counts`."""
    for s, t in pairs:
        counts["read"] += 1
        if not s.strip() or not t.strip():
            counts["dropped_blank"] += 1
        else:
            yield s, t


# --- writing the cache -----------------------------------------------------------------------------------
class _SideWriter:
    """Appends one side's ids to `<split>.<side>.bin` and their lengths to a scratch file; `close` writes the
    (pairs, 2) offset-and-length index from the scratch file a chunk at a time."""

    def __init__(self, out: Path, split: str, side: str, dtype: np.dtype):
        self.bin_path, self.idx_path = out / f"{split}.{side}.bin", out / f"{split}.{side}.idx.npy"
        self.len_path = out / f"{split}.{side}.lengths.tmp"
        self.dtype, self.n_tokens = dtype, 0
        self._bin, self._lengths = self.bin_path.open("wb"), self.len_path.open("wb")

    def append(self, rows: list[list[int]]) -> None:
        lengths = np.fromiter(map(len, rows), np.int64, len(rows))
        flat = np.fromiter(itertools.chain.from_iterable(rows), self.dtype, int(lengths.sum()))
        self._bin.write(flat.tobytes())
        self._lengths.write(lengths.tobytes())
        self.n_tokens += len(flat)

    def close(self) -> None:
        self._bin.close()
        self._lengths.close()
        n = self.len_path.stat().st_size // 8
        index = np.lib.format.open_memmap(self.idx_path, mode="w+", dtype=np.int64, shape=(n, 2))
        offset = 0
        for start in range(0, n, _INDEX_CHUNK):
            lengths = np.fromfile(self.len_path, np.int64, min(_INDEX_CHUNK, n - start), offset=start * 8)
            ends = offset + np.cumsum(lengths)
            index[start : start + len(lengths), 0] = ends - lengths
            index[start : start + len(lengths), 1] = lengths
            offset = int(ends[-1])
        index.flush()
        del index
        self.len_path.unlink()


def _chunks(pairs: Iterator[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    while chunk := list(itertools.islice(pairs, size)):
        yield chunk


def _write_train(data: DataConfig, tokenizer: Tokenizer, out: Path, dtype: np.dtype, total: int) -> dict:
    counts = {"read": 0, "dropped_blank": 0}
    writers = [_SideWriter(out, "train", side, dtype) for side in SIDES]
    with tqdm(total=total, unit="pairs", desc="encode train", disable=not sys.stderr.isatty()) as bar:
        for chunk in _chunks(_non_blank(stream_pairs(data, "train"), counts), CHUNK):  # type: ignore[arg-type]
            for side, writer in enumerate(writers):
                writer.append(tokenizer.encode_batch([pair[side] for pair in chunk]))
            bar.update(len(chunk))
    for writer in writers:
        writer.close()
    lengths = (np.load(w.idx_path, mmap_mode="r", allow_pickle=False)[:, 1] for w in writers)
    _, n_long, n_empty = length_filter(*lengths, data.max_len)
    return {**counts, "pairs": counts["read"] - counts["dropped_blank"], "src_tokens": writers[0].n_tokens,
            "tgt_tokens": writers[1].n_tokens,
            "at_max_len": {"max_len": data.max_len, "dropped_long": n_long, "dropped_empty_source": n_empty}}


def length_filter(src_len: np.ndarray, tgt_len: np.ndarray, max_len: int) -> tuple[np.ndarray, int, int]:
    """The indices of the pairs encode_corpus keeps at `max_len`, and how many it drops as too long and for an
    empty source."""
    empty = src_len == 0
    long = ~empty & ((src_len > max_len) | (tgt_len > max_len))
    return np.flatnonzero(~empty & ~long), int(long.sum()), int(empty.sum())


def _train_tokenizer(data: DataConfig) -> tuple[Tokenizer, int]:
    """The BPE a translation run trains on this text (its sources, then its targets), read twice as a stream;
    and how many non-blank pairs there are."""
    counts = {"read": 0, "dropped_blank": 0}
    pairs = {"n": 0}

    def texts() -> Iterator[str]:
        for side in (0, 1):
            for pair in _non_blank(stream_pairs(data, "train"), counts):  # type: ignore[arg-type]
                pairs["n"] += side == 0
                yield pair[side]

    logger.info("training a BPE vocabulary of %d on the train text, streamed", data.vocab_size)
    with tqdm(texts(), unit="seg", desc="train BPE", disable=not sys.stderr.isatty()) as stream:
        tokenizer = train_bpe(stream, data.vocab_size, data.min_frequency, split_han=data.split_han)
    if not pairs["n"]:
        raise ValueError(f"No pairs left after filtering: read {counts['read'] // 2}, all with an empty side; "
                         "check the train files of the config")
    return tokenizer, pairs["n"]


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; name a new or empty directory for the cache")
    if out.is_dir() and any(out.iterdir()):
        what = "a prepared cache" if (out / MANIFEST).is_file() else "other files"
        raise ValueError(f"--out {out} already holds {what}; name a new or empty directory (a cache is never "
                         "overwritten)")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepare(data: DataConfig, out: str | Path) -> dict:
    """Tokenize the corpus `data` names into the cache directory `out` (new or empty); return the manifest."""
    from transformer.data.datasets import check_files

    out = Path(out)
    check_files(data)
    _check_corpus(data)
    _check_out(out)
    tokenizer, total = _train_tokenizer(data)
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _write(data, tokenizer, out, total)
    except BaseException:  # an error or Ctrl-C: leave no half-written cache behind (--out was new or empty)
        for path in out.iterdir():
            path.unlink()
        raise


def _write(data: DataConfig, tokenizer: Tokenizer, out: Path, total: int) -> dict:
    tokenizer.save(out / TOKENIZER_FILE)
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32)
    splits = {"train": _write_train(data, tokenizer, out, dtype, total)}
    for split in SPLIT_NAMES[1:]:
        pairs = stream_pairs(data, split)
        if pairs is not None:
            items = list(pairs)
            raw = ParallelCorpus([s for s, _ in items], [t for _, t in items])
            corpus = filter_pairs(raw)
            (out / f"{split}.json").write_text(json.dumps({"src": corpus.src, "tgt": corpus.tgt}, ensure_ascii=False),
                                               encoding="utf-8")
            splits[split] = {"read": len(raw), "dropped_blank": len(raw) - len(corpus), "pairs": len(corpus)}
    manifest = {"format": FORMAT, "version": VERSION, "data": to_dict(data), "vocab_size": tokenizer.vocab_size,
                "dtype": dtype.name, "tokenizer_sha256": _sha256(out / TOKENIZER_FILE), "splits": splits}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")  # last: the cache is whole
    return manifest


# --- reading the cache -----------------------------------------------------------------------------------
class PreparedPairs(Sequence):
    """The kept train pairs of a cache, as `encode_corpus` would give them, read from the memmaps on demand:
    `pairs[i]` is (source ids, target ids) as lists."""

    def __init__(self, bins: list[np.ndarray], indexes: list[np.ndarray], keep: np.ndarray):
        self._bins, self._indexes, self.keep = bins, indexes, keep

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:  # type: ignore[override]
        j = int(self.keep[i])
        rows = []
        for ids, index in zip(self._bins, self._indexes, strict=True):
            offset, length = index[j]
            rows.append(ids[offset : offset + length].tolist())
        return rows[0], rows[1]

    def lengths(self) -> np.ndarray:
        """(pairs, 2): the source and target lengths of the kept pairs, in order (what TokenBatchSampler.from_pairs
        measures), for TokenBatchSampler."""
        return np.stack([index[self.keep, 1] for index in self._indexes], axis=1)


class PreparedCorpus:
    """A cache directory written by `prepare`, checked against the run's data config when opened."""

    def __init__(self, directory: str | Path, data: DataConfig):
        self.directory = Path(directory)
        self.manifest = self._read_manifest()
        made = self.manifest["data"]
        for key in TOKENIZATION_KEYS:
            if made.get(key) != getattr(data, key):
                raise ValueError(f"data.{key}={getattr(data, key)!r} but the cache {self.directory} was prepared with "
                                 f"data.{key}={made.get(key)!r}; set data.{key}={made.get(key)!r} or prepare it again "
                                 "with this config")
        self.tokenizer_file = self.directory / TOKENIZER_FILE
        self.check_tokenizer(self.tokenizer_file)
        self.dtype = np.dtype(self.manifest["dtype"])

    def _read_manifest(self) -> dict:
        path = self.directory / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"data.prepared={str(self.directory)!r} holds no {MANIFEST}; write the cache "
                                    "with `transformer prepare CONFIG --out DIR` (an interrupted prepare leaves none)")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not valid JSON ({error}); prepare the cache again") from None
        found = (manifest.get("format"), manifest.get("version")) if isinstance(manifest, dict) else None
        if found != (FORMAT, VERSION):
            raise ValueError(f"{path} is format {found}, this version reads {(FORMAT, VERSION)}; prepare the cache "
                             "again with this version")
        return manifest

    def check_tokenizer(self, path: Path) -> None:
        """Refuse a tokenizer.json other than the one the cache's ids were made with."""
        if not path.is_file():
            raise FileNotFoundError(f"No tokenizer at {path}; prepare the cache again")
        if _sha256(path) != self.manifest["tokenizer_sha256"]:
            raise ValueError(f"{path} is not the tokenizer the cache {self.directory} was prepared with (sha256 "
                             "differs); prepare the cache again, or train this run from the start")

    def _side(self, split: str, side: str) -> tuple[np.ndarray, np.ndarray]:
        bin_path, idx_path = (self.directory / f"{split}.{side}{suffix}" for suffix in (".bin", ".idx.npy"))
        expected = self.manifest["splits"][split]
        index = np.load(idx_path, mmap_mode="r", allow_pickle=False)
        n_tokens = bin_path.stat().st_size // self.dtype.itemsize
        if (index.shape != (expected["pairs"], 2) or n_tokens != expected[f"{side}_tokens"]
                or (len(index) and int(index[-1].sum()) != n_tokens)):
            raise ValueError(f"{bin_path} ({n_tokens} tokens) and {idx_path} ({index.shape[0]} pairs) do not match "
                             f"{MANIFEST} ({expected['pairs']} pairs, {expected[f'{side}_tokens']} tokens): the cache "
                             "is damaged; prepare it again")
        return np.memmap(bin_path, dtype=self.dtype, mode="r"), index

    def pairs(self, max_len: int) -> PreparedPairs:
        """The train pairs a run with `max_len` trains on, as encode_corpus keeps them (with its warning)."""
        if max_len < 1:
            raise ValueError(f"max_len={max_len} must be at least 1 token")
        (src_ids, src_index), (tgt_ids, tgt_index) = (self._side("train", side) for side in SIDES)
        keep, n_long, n_empty = length_filter(src_index[:, 1], tgt_index[:, 1], max_len)
        report_dropped("the prepared cache", n_long, n_empty, len(src_index), len(keep), max_len)
        return PreparedPairs([src_ids, tgt_ids], [src_index, tgt_index], keep)


def load_prepared_split(directory: str | Path, split: str) -> ParallelCorpus | None:
    """The valid or test pairs a cache holds as text; None if its config named none."""
    if split == "train":
        raise ValueError(f"the cache {directory} holds the train split as token ids, not text; read it with "
                         "PreparedCorpus, or use the text corpus it was prepared from")
    path = Path(directory) / f"{split}.json"
    if not path.is_file():
        return None
    pairs = json.loads(path.read_text(encoding="utf-8"))
    return ParallelCorpus(pairs["src"], pairs["tgt"])
