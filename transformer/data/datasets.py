"""Turn a DataConfig into the text of a split: ParallelCorpus pairs (translation), segments (lm, mlm), labelled
texts (classify)."""

from __future__ import annotations

from pathlib import Path

from transformer.config import SPLIT_NAMES, DataConfig
from transformer.data.bible_books import GENRES, genre_of
from transformer.data.corpora import (
    ParallelCorpus,
    filter_pairs,
    load_bible,
    load_bible_verses,
    read_parallel_files,
    read_text,
    read_tsv,
)


def _check_split(split: str) -> None:
    if split not in SPLIT_NAMES:
        raise ValueError(f"unknown split {split!r}; use one of {list(SPLIT_NAMES)}")


def check_files(data: DataConfig) -> None:
    """Raise FileNotFoundError for the first data file the config names that is not a file (before any work)."""
    if data.corpus == "prepared" and not Path(data.prepared).is_dir():
        raise FileNotFoundError(f"data.prepared={data.prepared!r}: not a directory; write the cache with "
                                "`transformer prepare CONFIG --out DIR` and name DIR")
    for split in SPLIT_NAMES:
        for kind in ("src", "tgt", "tsv", "text"):
            path = getattr(data, f"{split}_{kind}")
            if path and not Path(path).is_file():
                what = "a directory" if Path(path).is_dir() else "not found"
                raise FileNotFoundError(f"data.{split}_{kind}={path!r}: {what}; name a UTF-8 text file "
                                        "(paths are relative to the directory you run in)")


def load_split(data: DataConfig, split: str) -> ParallelCorpus | None:
    """One split of the configured corpus, with empty pairs dropped; None if the config names no file for it."""
    _check_split(split)
    if data.corpus == "prepared":  # valid and test as text; train as ids (data/prepared.py, PreparedCorpus)
        from transformer.data.prepared import load_prepared_split

        return load_prepared_split(data.prepared, split)
    if data.corpus == "bible":
        corpus = load_bible(data.src, data.tgt, split, data.bible_split)
    elif data.corpus == "files":
        src, tgt = getattr(data, f"{split}_src"), getattr(data, f"{split}_tgt")
        if not (src and tgt):
            return None
        corpus = read_parallel_files(src, tgt)
    elif data.corpus == "tsv":
        path = getattr(data, f"{split}_tsv")
        if not path:
            return None
        corpus = read_tsv(path)
    else:
        raise ValueError(f"data.corpus={data.corpus!r} holds single segments, not pairs; use it with task: lm")
    return filter_pairs(corpus)


def load_texts(data: DataConfig, split: str) -> list[str] | None:
    """The segments (verses, lines) of one split for a language model; None if the config names no file.

    The Bible: the train books of each of `data.translations` (default: `data.tgt`), one after the other;
    the valid and test books of `data.tgt` alone, so the held-out books are never trained on.
    """
    _check_split(split)
    if data.corpus == "text":
        path = getattr(data, f"{split}_text")
        return read_text(path) if path else None
    if data.corpus != "bible":
        raise ValueError(f"a language model reads data.corpus='bible' or 'text', not {data.corpus!r}")
    codes = (data.translations or (data.tgt,)) if split == "train" else (data.tgt,)
    return [verse for code in codes for verse in load_bible_verses(code, split, data.bible_split)[0]]


def load_labelled(data: DataConfig, split: str) -> tuple[list[str], list[str]] | None:
    """(texts, labels) of one split for a classifier; None if the config names no file for it.

    TSV: `text<TAB>label` lines. The Bible: each verse labelled with its book's genre (bible_books.GENRES), the
    train books of each of `data.translations` (default: `data.tgt`), the valid and test books of `data.tgt`.
    """
    _check_split(split)
    if data.corpus == "tsv":
        path = getattr(data, f"{split}_tsv")
        if not path:
            return None
        corpus = read_tsv(path, columns=("text", "label"))
        return corpus.src, [label.strip() for label in corpus.tgt]
    if data.corpus != "bible":
        raise ValueError(f"a classifier reads data.corpus='bible' or 'tsv' (text TAB label), not {data.corpus!r}")
    texts, labels = [], []
    for code in (data.translations or (data.tgt,)) if split == "train" else (data.tgt,):
        verses, books = load_bible_verses(code, split, data.bible_split)
        texts += verses
        labels += [GENRES[genre_of(book)] for book in books]
    return texts, labels
