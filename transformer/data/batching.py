"""Batches by token budget with length bucketing (section 5.1: ~25,000 source and target tokens a batch)."""

from __future__ import annotations

import array
import itertools
import logging
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from transformer.special_ids import check_special_ids

from .corpora import ParallelCorpus

logger = logging.getLogger(__name__)

__all__ = ["Batch", "SegmentBatch", "TokenBatchSampler", "batches", "collate", "collate_segments", "encode_corpus",
           "encode_segments"]

Pair = tuple[list[int], list[int]]


class _Encoder(Protocol):
    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...


@dataclass
class Batch:
    """Right-padded token ids: `src` (B, S), `tgt_in` = <bos> + target (B, T), `tgt_out` = target + <eos> (B, T)."""

    src: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    pad_id: int = 0

    @property
    def n_src_tokens(self) -> int:
        """Non-pad source tokens."""
        return int((self.src != self.pad_id).sum())

    @property
    def n_tgt_tokens(self) -> int:
        """Non-pad target tokens (of `tgt_out`, the ones the loss counts)."""
        return int((self.tgt_out != self.pad_id).sum())

    def __len__(self) -> int:
        return self.src.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy on `device`."""
        return Batch(
            self.src.to(device, non_blocking=non_blocking),
            self.tgt_in.to(device, non_blocking=non_blocking),
            self.tgt_out.to(device, non_blocking=non_blocking),
            self.pad_id,
        )


def encode_corpus(corpus: ParallelCorpus, tokenizer: _Encoder, max_len: int) -> list[Pair]:
    """Token ids of each pair, dropping (with a logged count) pairs with a side over `max_len` tokens.

    `max_len` counts tokens without <bos>/<eos>; the decoder sees max_len + 1 positions. Pairs whose
    source encodes to nothing are dropped too (an all-padding row has nothing to attend to).
    """
    if max_len < 1:
        raise ValueError(f"max_len={max_len} must be at least 1 token")
    src_ids = tokenizer.encode_batch(corpus.src)
    tgt_ids = tokenizer.encode_batch(corpus.tgt)
    pairs: list[Pair] = []
    n_long = n_empty = 0
    for s, t in zip(src_ids, tgt_ids, strict=True):
        if not s:
            n_empty += 1
        elif len(s) > max_len or len(t) > max_len:
            n_long += 1
        else:
            pairs.append((s, t))
    report_dropped("encode_corpus", n_long, n_empty, len(src_ids), len(pairs), max_len)
    return pairs


def report_dropped(where: str, n_long: int, n_empty: int, n_total: int, n_kept: int, max_len: int) -> None:
    """Log the pairs dropped for their length or an empty source; raise ValueError if none is left."""
    if n_long or n_empty:
        logger.warning("%s: dropped %d of %d pairs longer than max_len=%d tokens and %d with an empty source",
                       where, n_long, n_total, max_len, n_empty)
    if not n_kept:
        raise ValueError(f"{where}: no pair left of {n_total} ({n_long} longer than max_len={max_len}, "
                         f"{n_empty} empty); raise max_len or check the corpus")


def pad_ids(rows: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """Right-pad id lists into a (B, S) int64 tensor, S = the longest row (at least 1)."""
    width = max([1, *(len(r) for r in rows)])
    out = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
    return out


def collate(pairs: Sequence[Pair], pad_id: int, bos_id: int, eos_id: int) -> Batch:
    """Stack (src ids, tgt ids) pairs into a right-padded `Batch`."""
    if not pairs:
        raise ValueError("collate got no pairs; a batch needs at least one example")
    check_special_ids(pad_id, bos_id, eos_id)
    src = pad_ids([s for s, _ in pairs], pad_id)
    tgt_in = pad_ids([[bos_id, *t] for _, t in pairs], pad_id)
    tgt_out = pad_ids([[*t, eos_id] for _, t in pairs], pad_id)
    return Batch(src, tgt_in, tgt_out, pad_id)


@dataclass
class SegmentBatch:
    """Right-padded segments of a language model: `inputs` = <bos> + segment (B, T), `targets` = segment +
    <eos> (B, T), each position's next token."""

    inputs: torch.Tensor
    targets: torch.Tensor
    pad_id: int = 0

    @property
    def n_tokens(self) -> int:
        """Non-pad target tokens (the ones the loss counts)."""
        return int((self.targets != self.pad_id).sum())

    def __len__(self) -> int:
        return self.inputs.shape[0]


def encode_segments(texts: Sequence[str], tokenizer: _Encoder, max_len: int) -> list[list[int]]:
    """Token ids of each segment, dropping (with a logged count) empty ones and those over `max_len` tokens."""
    if max_len < 1:
        raise ValueError(f"max_len={max_len} must be at least 1 token")
    encoded = tokenizer.encode_batch(list(texts))
    kept = [ids for ids in encoded if 0 < len(ids) <= max_len]
    if len(kept) < len(encoded):
        logger.warning("encode_segments: dropped %d of %d segments that are empty or longer than max_len=%d "
                       "tokens", len(encoded) - len(kept), len(encoded), max_len)
    if not kept:
        raise ValueError(f"encode_segments: no segment left of {len(encoded)}; raise max_len or check the text")
    return kept


def collate_segments(segments: Sequence[Sequence[int]], pad_id: int, bos_id: int, eos_id: int) -> SegmentBatch:
    """Stack segments' ids into a right-padded `SegmentBatch`."""
    if not segments:
        raise ValueError("collate_segments got no segments; a batch needs at least one")
    check_special_ids(pad_id, bos_id, eos_id)
    inputs = pad_ids([[bos_id, *s] for s in segments], pad_id)
    targets = pad_ids([[*s, eos_id] for s in segments], pad_id)
    return SegmentBatch(inputs, targets, pad_id)


class TokenBatchSampler:
    """Index batches of similar length under a padded-token budget, deterministic per (seed, epoch).

    A batch of n examples costs n * max(len + 1) tokens on each side (source and target); both must fit
    in `max_tokens`. With `shuffle`, examples are shuffled, sorted by length within chunks of
    `chunk_size`, cut into batches, and the batches shuffled. Without it, one sorted pass. An example
    over the budget on its own gets a batch of its own (and a warning), never dropped.
    """

    def __init__(self, lengths: Sequence[tuple[int, int]] | np.ndarray, max_tokens: int, shuffle: bool = True,
                 seed: int = 0, chunk_size: int = 8192):
        if max_tokens < 1:
            raise ValueError(f"max_tokens={max_tokens} must be positive (the paper uses about 25000)")
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size} must be positive")
        if not len(lengths):
            raise ValueError("TokenBatchSampler got no examples; encode a non-empty corpus first")
        # (n, 2) int64: (source, target) length of each example; numpy, so that millions of examples (a prepared
        # corpus, data/prepared.py) take seconds and no Python objects
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(len(lengths), 2)
        negative = np.flatnonzero(self.lengths.min(axis=1) < 0)
        if len(negative):
            i = int(negative[0])
            raise ValueError(f"Example {i} has a negative length {tuple(self.lengths[i].tolist())}")
        self._cost = self.lengths.max(axis=1) + 1  # padded tokens a side per example of a batch of this longest one
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.chunk_size = chunk_size
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None
        oversized = np.flatnonzero(self._cost > max_tokens)
        if len(oversized):
            logger.warning("%d examples exceed max_tokens=%d on their own and get a batch each (first: %s); "
                           "raise max_tokens or lower max_len", len(oversized), max_tokens, oversized[:5].tolist())

    @classmethod
    def from_segments(cls, segments: Sequence[Sequence[int]], max_tokens: int, shuffle: bool = True, seed: int = 0,
                      chunk_size: int = 8192) -> TokenBatchSampler:
        """A sampler over single segments (a language model's; no source side)."""
        return cls([(0, len(s)) for s in segments], max_tokens, shuffle, seed, chunk_size)

    @classmethod
    def from_pairs(cls, pairs: Sequence[Pair], max_tokens: int, shuffle: bool = True, seed: int = 0,
                   chunk_size: int = 8192) -> TokenBatchSampler:
        """A sampler over the lengths of encoded pairs."""
        return cls([(len(s), len(t)) for s, t in pairs], max_tokens, shuffle, seed, chunk_size)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order `__iter__` yields."""
        self.epoch = epoch

    def _cut(self, order: np.ndarray) -> Iterator[np.ndarray]:
        """Cut `order`, sorted by length, into batches: each takes examples while n * (its longest + 1)
        fits in max_tokens (an example over the budget alone: a batch of one). The cost of the next example is
        the batch's new longest (sorted), and n * cost only grows, so each batch's end is one vectorized test."""
        cost = self._cost[order]
        start = 0
        while start < len(order):
            window = cost[start : start + max(1, self.max_tokens // int(cost[start]))]
            fits = int(np.count_nonzero(window * np.arange(1, len(window) + 1) <= self.max_tokens))  # a prefix
            end = start + max(fits, 1)
            yield order[start:end]
            start = end

    def _sorted(self, indices: np.ndarray) -> np.ndarray:
        """`indices` stably sorted by (longest side, source, target), as sorted(key=(max(l), l)) would."""
        lengths = self.lengths[indices]
        return indices[np.lexsort((lengths[:, 1], lengths[:, 0], self._cost[indices]))]

    def _batches(self) -> list[list[int]]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        n = len(self.lengths)
        if not self.shuffle:
            out = [b.tolist() for b in self._cut(self._sorted(np.arange(n)))]
        else:
            rng = random.Random(self.seed * 1_000_003 + self.epoch)
            shuffled = array.array("q", range(n))  # int64s: the same permutation as a list's, faster
            rng.shuffle(shuffled)
            indices = np.frombuffer(shuffled, dtype=np.int64)
            out = []
            for start in range(0, n, self.chunk_size):
                chunk = self._sorted(indices[start : start + self.chunk_size])
                out.extend(b.tolist() for b in self._cut(chunk))
            rng.shuffle(out)
        self._cache = (self.epoch, out)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return iter([list(b) for b in self._batches()])

    def __len__(self) -> int:
        return len(self._batches())


def batches(pairs: Sequence, sampler: TokenBatchSampler, pad_id: int, bos_id: int,
            eos_id: int, start: int = 0, collate_fn: Callable[..., Any] = collate) -> Iterator[Any]:
    """Collated batches in the sampler's order for its current epoch, from batch number `start` on.

    `start` skips the epoch's first batches without collating them (resuming in the middle of an epoch).
    `collate_fn` stacks the examples: `collate` for (src, tgt) pairs, `collate_segments` for segments.
    """
    if len(sampler.lengths) != len(pairs):
        raise ValueError(f"The sampler covers {len(sampler.lengths)} examples but {len(pairs)} pairs (or segments) "
                         "were given; build it with TokenBatchSampler.from_pairs(pairs, ...) or from_segments")
    if start < 0:
        raise ValueError(f"start={start} must be >= 0 (the number of the epoch's batches to skip)")
    for indices in itertools.islice(sampler, start, None):
        yield collate_fn([pairs[i] for i in indices], pad_id, bos_id, eos_id)
