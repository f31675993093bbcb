"""TokenBatchSampler's vectorized batching (numpy, for millions of examples: a prepared corpus) gives the very
batches of the pure-Python algorithm it replaced, kept here as the reference."""

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer.data.batching import TokenBatchSampler


def reference_batches(lengths, max_tokens, shuffle, seed, epoch, chunk_size):
    """The sampler's order before vectorization, verbatim in substance."""
    def cut(order):
        batch, src_max, tgt_max = [], 0, 0
        for i in order:
            s, t = lengths[i]
            new_src, new_tgt = max(src_max, s + 1), max(tgt_max, t + 1)
            if batch and max(new_src, new_tgt) * (len(batch) + 1) > max_tokens:
                yield batch
                batch, new_src, new_tgt = [], s + 1, t + 1
            batch.append(i)
            src_max, tgt_max = new_src, new_tgt
        if batch:
            yield batch

    key = lambda i: (max(lengths[i]), lengths[i])  # noqa: E731
    indices = list(range(len(lengths)))
    if not shuffle:
        return list(cut(sorted(indices, key=key)))
    rng = random.Random(seed * 1_000_003 + epoch)
    rng.shuffle(indices)
    out = []
    for start in range(0, len(indices), chunk_size):
        out.extend(cut(sorted(indices[start : start + chunk_size], key=key)))
    rng.shuffle(out)
    return out


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), min_size=1, max_size=400),
    max_tokens=st.integers(1, 300),
    shuffle=st.booleans(),
    seed=st.integers(0, 5),
    epoch=st.integers(0, 3),
    chunk_size=st.integers(1, 64),
)
def test_the_batches_are_those_of_the_reference(lengths, max_tokens, shuffle, seed, epoch, chunk_size):
    sampler = TokenBatchSampler(lengths, max_tokens, shuffle=shuffle, seed=seed, chunk_size=chunk_size)
    sampler.set_epoch(epoch)
    assert list(sampler) == reference_batches(lengths, max_tokens, shuffle, seed, epoch, chunk_size)


def test_a_corpus_sized_like_a_real_one_and_numpy_lengths():
    rng = np.random.default_rng(0)
    src = rng.integers(1, 120, 30_000)
    lengths = np.stack([src, np.maximum(1, src + rng.integers(-9, 10, len(src)))], axis=1)  # correlated sides
    as_tuples = [tuple(row) for row in lengths.tolist()]
    for epoch in (0, 1):
        sampler = TokenBatchSampler(lengths, 2048, seed=3, chunk_size=4096)
        sampler.set_epoch(epoch)
        assert list(sampler) == reference_batches(as_tuples, 2048, True, 3, epoch, 4096)
