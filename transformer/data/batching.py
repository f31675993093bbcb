"""Batches by token budget with length bucketing (section 5.1: ~25,000 source and target tokens a batch)."""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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
    if n_long or n_empty:
        logger.warning("encode_corpus: dropped %d of %d pairs longer than max_len=%d tokens and %d with an "
                       "empty source", n_long, len(src_ids), max_len, n_empty)
    if not pairs:
        raise ValueError(f"encode_corpus: no pair left of {len(src_ids)} ({n_long} longer than "
                         f"max_len={max_len}, {n_empty} empty); raise max_len or check the corpus")
    return pairs


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

    def __init__(self, lengths: Sequence[tuple[int, int]], max_tokens: int, shuffle: bool = True,
                 seed: int = 0, chunk_size: int = 8192):
        if max_tokens < 1:
            raise ValueError(f"max_tokens={max_tokens} must be positive (the paper uses about 25000)")
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size} must be positive")
        if not lengths:
            raise ValueError("TokenBatchSampler got no examples; encode a non-empty corpus first")
        self.lengths = [(int(s), int(t)) for s, t in lengths]
        bad = next(((i, lt) for i, lt in enumerate(self.lengths) if min(lt) < 0), None)
        if bad is not None:
            raise ValueError(f"Example {bad[0]} has a negative length {bad[1]}")
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.chunk_size = chunk_size
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None
        oversized = [i for i, (s, t) in enumerate(self.lengths) if max(s, t) + 1 > max_tokens]
        if oversized:
            logger.warning("%d examples exceed max_tokens=%d on their own and get a batch each (first: %s); "
                           "raise max_tokens or lower max_len", len(oversized), max_tokens, oversized[:5])

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

    def _cut(self, order: Iterable[int]) -> Iterator[list[int]]:
        batch: list[int] = []
        src_max = tgt_max = 0
        for i in order:
            s, t = self.lengths[i]
            new_src, new_tgt = max(src_max, s + 1), max(tgt_max, t + 1)
            n = len(batch) + 1
            if batch and max(new_src, new_tgt) * n > self.max_tokens:
                yield batch
                batch, new_src, new_tgt = [], s + 1, t + 1
            batch.append(i)
            src_max, tgt_max = new_src, new_tgt
        if batch:
            yield batch

    def _batches(self) -> list[list[int]]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        key = lambda i: (max(self.lengths[i]), self.lengths[i])  # noqa: E731
        indices = list(range(len(self.lengths)))
        if not self.shuffle:
            out = list(self._cut(sorted(indices, key=key)))
        else:
            rng = random.Random(self.seed * 1_000_003 + self.epoch)
            rng.shuffle(indices)
            out = []
            for start in range(0, len(indices), self.chunk_size):
                out.extend(self._cut(sorted(indices[start : start + self.chunk_size], key=key)))
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
