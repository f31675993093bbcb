import logging
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer.data.batching import Batch, TokenBatchSampler, batches, collate, encode_corpus
from transformer.data.corpora import ParallelCorpus

PAD, BOS, EOS = 0, 1, 2


class CharTokenizer:
    """One id per character (ord), enough to test batching without training BPE."""

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [[ord(c) for c in text] for text in texts]


def random_lengths(n: int, seed: int = 0) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randint(1, 60), rng.randint(1, 60)) for _ in range(n)]


def test_collate_pads_right_and_shifts_target() -> None:
    batch = collate([([5, 6, 7], [8, 9]), ([5], [8, 9, 10, 11])], PAD, BOS, EOS)
    torch.testing.assert_close(batch.src, torch.tensor([[5, 6, 7], [5, 0, 0]]))
    torch.testing.assert_close(batch.tgt_in, torch.tensor([[1, 8, 9, 0, 0], [1, 8, 9, 10, 11]]))
    torch.testing.assert_close(batch.tgt_out, torch.tensor([[8, 9, 2, 0, 0], [8, 9, 10, 11, 2]]))
    assert batch.src.dtype == batch.tgt_in.dtype == torch.long
    assert (batch.n_src_tokens, batch.n_tgt_tokens, len(batch)) == (4, 8, 2)
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and moved.n_tgt_tokens == 8


def test_collate_empty_target_still_has_eos() -> None:
    batch = collate([([5], [])], PAD, BOS, EOS)
    assert batch.tgt_in.tolist() == [[BOS]] and batch.tgt_out.tolist() == [[EOS]]


def test_collate_rejects_clashing_ids() -> None:
    with pytest.raises(ValueError, match="special ids must differ"):
        collate([([5], [6])], 2, 1, 2)
    with pytest.raises(ValueError, match="no pairs"):
        collate([], PAD, BOS, EOS)


def test_encode_corpus_drops_long_and_empty(caplog: pytest.LogCaptureFixture) -> None:
    corpus = ParallelCorpus(["ab", "abcdef", "", "abc"], ["xy", "x", "x", "wxyz"])
    with caplog.at_level(logging.WARNING):
        pairs = encode_corpus(corpus, CharTokenizer(), max_len=4)
    assert pairs == [([97, 98], [120, 121]), ([97, 98, 99], [119, 120, 121, 122])]
    assert "dropped 1 of 4 pairs longer than max_len=4" in caplog.text and "1 with an empty source" in caplog.text
    with pytest.raises(ValueError, match="max_len=0"):
        encode_corpus(corpus, CharTokenizer(), max_len=0)
    with pytest.raises(ValueError, match=r"no pair left of 4 \(3 longer than max_len=1, 1 empty\)"):
        encode_corpus(corpus, CharTokenizer(), max_len=1)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.tuples(st.integers(0, 80), st.integers(0, 80)), min_size=1, max_size=300),
    max_tokens=st.integers(1, 400),
    shuffle=st.booleans(),
    seed=st.integers(0, 5),
    epoch=st.integers(0, 3),
    chunk_size=st.integers(1, 128),
)
def test_every_example_once_within_budget(lengths: list[tuple[int, int]], max_tokens: int, shuffle: bool,
                                          seed: int, epoch: int, chunk_size: int) -> None:
    sampler = TokenBatchSampler(lengths, max_tokens, shuffle=shuffle, seed=seed, chunk_size=chunk_size)
    sampler.set_epoch(epoch)
    out = list(sampler)
    assert len(out) == len(sampler)
    assert sorted(i for b in out for i in b) == list(range(len(lengths)))
    for b in out:
        assert b
        cost = len(b) * max(max(lengths[i]) + 1 for i in b)
        assert cost <= max_tokens or len(b) == 1


def test_oversized_example_gets_own_batch_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    lengths = [(3, 3)] * 10 + [(50, 2)]
    with caplog.at_level(logging.WARNING):
        sampler = TokenBatchSampler(lengths, max_tokens=20)
    assert "1 examples exceed max_tokens=20" in caplog.text and "[10]" in caplog.text
    assert [10] in list(sampler)
    assert sum(len(b) for b in sampler) == 11


def test_deterministic_per_seed_and_epoch() -> None:
    lengths = random_lengths(500)
    a, b = TokenBatchSampler(lengths, 300, seed=1), TokenBatchSampler(lengths, 300, seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    a.set_epoch(0)
    assert list(a) == first
    assert list(TokenBatchSampler(lengths, 300, seed=2)) != first


def test_unshuffled_is_sorted_and_stable() -> None:
    lengths = random_lengths(200)
    sampler = TokenBatchSampler(lengths, 300, shuffle=False)
    flat = [i for b in sampler for i in b]
    assert [max(lengths[i]) for i in flat] == sorted(max(lt) for lt in lengths)
    sampler.set_epoch(5)
    assert [i for b in sampler for i in b] == flat


def test_bucketing_reduces_padding() -> None:
    rng = random.Random(3)
    src_lengths = [rng.randint(1, 80) for _ in range(2000)]
    lengths = [(n, max(1, n + rng.randint(-5, 5))) for n in src_lengths]  # translations' lengths correlate
    real = sum(s + t + 2 for s, t in lengths)

    def padded(groups: list[list[int]]) -> int:
        return sum(len(b) * (max(lengths[i][0] for i in b) + max(lengths[i][1] for i in b) + 2) for b in groups)

    bucketed = list(TokenBatchSampler(lengths, 1000, chunk_size=1000))
    unsorted = [list(range(i, min(i + 16, 2000))) for i in range(0, 2000, 16)]
    assert real / padded(bucketed) > 0.9 > real / padded(unsorted)


def test_batches_convenience() -> None:
    pairs = [([5] * n, [6] * (n + 1)) for n in range(1, 30)]
    sampler = TokenBatchSampler.from_pairs(pairs, max_tokens=64, seed=0)
    out = list(batches(pairs, sampler, PAD, BOS, EOS))
    assert len(out) == len(sampler)
    assert sum(b.n_src_tokens for b in out) == sum(len(s) for s, _ in pairs)
    assert sum(b.n_tgt_tokens for b in out) == sum(len(t) + 1 for _, t in pairs)
    with pytest.raises(ValueError, match="covers 29 examples but 3 pairs"):
        next(batches(pairs[:3], sampler, PAD, BOS, EOS))


def test_batches_from_start_skip_the_first_batches_of_the_epoch() -> None:
    pairs = [([5] * n, [6] * (n + 1)) for n in range(1, 30)]
    sampler = TokenBatchSampler.from_pairs(pairs, max_tokens=64, seed=0)
    sampler.set_epoch(3)
    every = list(batches(pairs, sampler, PAD, BOS, EOS))
    rest = list(batches(pairs, sampler, PAD, BOS, EOS, start=2))
    assert len(rest) == len(every) - 2
    for ours, theirs in zip(rest, every[2:], strict=True):
        assert torch.equal(ours.src, theirs.src) and torch.equal(ours.tgt_out, theirs.tgt_out)
    assert list(batches(pairs, sampler, PAD, BOS, EOS, start=len(sampler))) == []
    with pytest.raises(ValueError, match="start=-1 must be >= 0"):
        next(batches(pairs, sampler, PAD, BOS, EOS, start=-1))


def test_sampler_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_tokens=0"):
        TokenBatchSampler([(1, 1)], 0)
    with pytest.raises(ValueError, match="no examples"):
        TokenBatchSampler([], 10)
    with pytest.raises(ValueError, match=r"Example 1 has a negative length \(-1, 2\)"):
        TokenBatchSampler([(1, 1), (-1, 2)], 10)


def test_collate_takes_the_special_ids_of_imported_models() -> None:
    """One rule everywhere (transformer/special_ids.py): BOS may be PAD (Marian) or EOS (BART)."""
    marian = collate([([5], [6])], pad_id=0, bos_id=0, eos_id=1)
    bart = collate([([5], [6])], pad_id=1, bos_id=2, eos_id=2)
    assert marian.tgt_in.tolist() == [[0, 6]] and bart.tgt_out.tolist() == [[6, 2]]
