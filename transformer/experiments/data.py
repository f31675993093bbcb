"""The data of the synthetic experiments: a recall task of any length, and the English Bible as bytes.

Recall after N distractors: a sequence [key, d_1, ..., d_N, ?] asks for its first token at its last position,
N + 1 steps later. Keys are KEYS symbols, distractors DISTRACTORS others, so chance is 1 / KEYS.

The byte stream: the English Bible (King James 2000, code "2") of the corpus's train and test books, verses
joined by newlines, as UTF-8 bytes, so that a language model needs no tokenizer and a position is one byte.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

KEYS, DISTRACTORS = 8, 16
QUERY = KEYS + DISTRACTORS  # the last token of every sequence
RECALL_VOCAB = QUERY + 1
BIBLE_EN = "2"  # the English translation of configs/bible-de-en.yaml's target side


def recall_batch(length: int, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """`batch` sequences of `length` tokens (key, length - 2 distractors, the query) and their keys:
    (B, length) ids and (B,) labels in [0, KEYS)."""
    if length < 3:
        raise ValueError(f"a recall sequence needs length >= 3 (key, a distractor, query), got {length}")
    keys = torch.randint(0, KEYS, (batch,), generator=generator)  # (B,)
    ids = torch.randint(KEYS, KEYS + DISTRACTORS, (batch, length), generator=generator)  # (B, L)
    ids[:, 0] = keys
    ids[:, -1] = QUERY
    return ids, keys


@functools.lru_cache(maxsize=4)
def bible_bytes(split: str, limit: int | None = None) -> Tensor:
    """The English Bible's `split` books ('train', 'valid', 'test'), the first `limit` verses, as a 1-D uint8
    tensor of UTF-8 bytes (read once per process; do not modify it)."""
    from transformer.data.corpora import load_bible_verses

    verses, _ = load_bible_verses(BIBLE_EN, split)
    text = "\n".join(verses[:limit]) + "\n"
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).clone()


def byte_windows(stream: Tensor, length: int, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """`batch` random windows of `length` + 1 bytes: inputs (B, length) and next-byte targets (B, length)."""
    if len(stream) <= length + 1:
        raise ValueError(f"the byte stream has {len(stream)} bytes, fewer than a window of {length + 1}")
    starts = torch.randint(0, len(stream) - length - 1, (batch,), generator=generator)  # (B,)
    windows = torch.stack([stream[s:s + length + 1] for s in starts.tolist()]).long()  # (B, length + 1)
    return windows[:, :-1], windows[:, 1:]
