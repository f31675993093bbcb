"""Turn a DataConfig into train/valid/test ParallelCorpus objects."""

from __future__ import annotations

from transformer.config import SPLIT_NAMES, DataConfig
from transformer.data.corpora import ParallelCorpus, filter_pairs, load_bible, read_parallel_files, read_tsv


def load_split(data: DataConfig, split: str) -> ParallelCorpus | None:
    """One split of the configured corpus, with empty pairs dropped; None if the config names no file for it."""
    if split not in SPLIT_NAMES:
        raise ValueError(f"unknown split {split!r}; use one of {list(SPLIT_NAMES)}")
    if data.corpus == "bible":
        corpus = load_bible(data.src, data.tgt, split)
    elif data.corpus == "files":
        src, tgt = getattr(data, f"{split}_src"), getattr(data, f"{split}_tgt")
        if not (src and tgt):
            return None
        corpus = read_parallel_files(src, tgt)
    else:
        path = getattr(data, f"{split}_tsv")
        if not path:
            return None
        corpus = read_tsv(path)
    return filter_pairs(corpus)
