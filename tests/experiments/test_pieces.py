"""The measuring instruments of the experiments, against closed forms: the recall task's sequences, the dead-unit
count, equal parameter counts, the length buckets, and the permutation checks of the order experiment."""

from __future__ import annotations

import torch

from transformer.experiments.activations import dead_fraction
from transformer.experiments.byte_lm import build_byte_lm, position_losses
from transformer.experiments.data import DISTRACTORS, KEYS, QUERY, byte_windows, recall_batch
from transformer.experiments.positions import buckets
from transformer.experiments.sequence_models import (
    RecurrentClassifier,
    TransformerClassifier,
    matched_width,
    n_parameters,
)
from transformer.experiments.translation import BUCKETS, bucket_of


def test_a_recall_sequence_is_its_key_then_distractors_then_the_query():
    ids, keys = recall_batch(10, 64, torch.Generator().manual_seed(0))
    assert ids.shape == (64, 10) and keys.shape == (64,)
    assert torch.equal(ids[:, 0], keys) and bool((keys < KEYS).all())
    assert bool((ids[:, -1] == QUERY).all())
    middle = ids[:, 1:-1]
    assert bool(((middle >= KEYS) & (middle < KEYS + DISTRACTORS)).all())  # never a key: only the first is


def test_byte_windows_are_inputs_and_their_next_bytes():
    stream = torch.arange(100, dtype=torch.uint8)
    inputs, targets = byte_windows(stream, 8, 5, torch.Generator().manual_seed(1))
    assert torch.equal(targets, inputs + 1)  # the stream counts up: each target is the byte after its input
    assert bool((inputs[:, 1:] == inputs[:, :-1] + 1).all())


def test_dead_fraction_counts_units_negative_on_every_probe_position():
    """Units whose fc1 bias is -1e4 are negative everywhere (dead), units with +1e4 never: the fraction is the
    closed-form share of the first kind."""
    model = build_byte_lm(0, d_model=16, layers=2)
    d_ff = model.stack.layers[0].ff.fc1.out_features
    with torch.no_grad():
        for i, layer in enumerate(model.stack.layers):
            layer.ff.fc1.bias.fill_(1e4)
            layer.ff.fc1.bias[: 3 + i].fill_(-1e4)  # 3 dead units in layer 0, 4 in layer 1
    probe = torch.randint(0, 256, (4, 12))
    assert dead_fraction(model, probe) == (3 + 4) / (2 * d_ff)


def test_position_losses_average_the_per_position_cross_entropy():
    model = build_byte_lm(0, d_model=16, layers=1)
    stream = torch.randint(0, 256, (500,), dtype=torch.uint8)
    losses = position_losses(model, stream, 10, 6, seed=3)
    inputs, targets = byte_windows(stream, 10, 6, torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(inputs).transpose(1, 2), targets, reduction="none")
    torch.testing.assert_close(losses, expected.mean(dim=0))


def test_matched_widths_give_equal_parameter_counts():
    target = n_parameters(TransformerClassifier(25, 64, 8))
    for cell in ("rnn", "lstm"):
        width = matched_width(lambda d, cell=cell: RecurrentClassifier(25, d, 8, cell=cell), target)
        assert abs(n_parameters(RecurrentClassifier(25, width, 8, cell=cell)) - target) / target < 0.02


def test_attention_without_positions_is_permutation_equivariant_and_with_them_is_not():
    """torch.manual_seed fixes the weights; the closed form of equivariance: states(x[perm]) == states(x)[perm]."""
    torch.manual_seed(0)
    x = torch.randint(1, 30, (1, 7))
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    for positional, equivariant in (("none", True), ("sinusoidal", False)):
        model = TransformerClassifier(30, 16, 2, positional=positional, causal=False).eval()
        with torch.no_grad():
            states = model.states(model.tokens(x))[0]
            permuted = model.states(model.tokens(x[:, perm]))[0]
        assert torch.allclose(permuted, states[perm], atol=1e-5) is equivariant


def test_length_buckets():
    assert buckets(64, 512) == [(0, 64), (64, 128), (128, 256), (256, 512)]
    assert buckets(16, 40) == [(0, 16), (16, 32), (32, 40)]
    assert [bucket_of(" ".join(["w"] * n)) for n in (1, 10, 11, 50, 51, 300)] == [0, 0, 1, 4, 5, 5]
    assert len(BUCKETS) == 6
