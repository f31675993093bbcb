"""Data: parallel corpora (the Bible, text files), byte-level BPE tokenizer, token-budget batching."""

from .batching import Batch, TokenBatchSampler, batches, collate, encode_corpus
from .corpora import (
    SPLITS,
    BibleTranslation,
    ParallelCorpus,
    bible_db_path,
    bible_split,
    bible_translations,
    clean_verse,
    export_bible,
    filter_pairs,
    load_bible,
    read_parallel_files,
    read_tsv,
)
from .tokenizer import SPECIAL_TOKENS, Tokenizer, train_bpe

__all__ = [
    "SPECIAL_TOKENS",
    "SPLITS",
    "Batch",
    "BibleTranslation",
    "ParallelCorpus",
    "TokenBatchSampler",
    "Tokenizer",
    "batches",
    "bible_db_path",
    "bible_split",
    "bible_translations",
    "clean_verse",
    "collate",
    "encode_corpus",
    "export_bible",
    "filter_pairs",
    "load_bible",
    "read_parallel_files",
    "read_tsv",
    "train_bpe",
]
