"""Sampling: settings checked, top-k and top-p on scripted distributions, reproducible draws, stopping rules."""

import math

import pytest
import torch

from transformer.decoding.sampling import check_sampling, next_token_distribution, sample, top_k_filter, top_p_filter

PAD, BOS, EOS = 0, 1, 2


def _kept(logits: torch.Tensor) -> set[int]:
    return set(torch.nonzero(torch.isfinite(logits)).view(-1).tolist())


@pytest.mark.parametrize(("k", "kept"), [(1, {3}), (2, {3, 1}), (3, {3, 1, 4}), (5, set(range(5))), (9, set(range(5)))])
def test_top_k_keeps_the_k_most_probable_tokens(k, kept):
    logits = torch.tensor([0.0, 2.0, -1.0, 3.0, 1.0])
    assert _kept(top_k_filter(logits, k)) == kept


def test_top_k_keeps_tokens_tied_with_the_kth():
    assert _kept(top_k_filter(torch.tensor([1.0, 2.0, 2.0, 0.0]), 2)) == {1, 2}
    assert _kept(top_k_filter(torch.tensor([1.0, 2.0, 1.0, 0.0]), 2)) == {0, 1, 2}


# probabilities 0.05, 0.5, 0.15, 0.3 (out of order on purpose): the nucleus adds 0.5, 0.3, 0.15, 0.05
PROBS = torch.tensor([0.05, 0.5, 0.15, 0.3])


@pytest.mark.parametrize(("p", "kept"), [(0.3, {1}), (0.49, {1}), (0.51, {1, 3}), (0.79, {1, 3}), (0.81, {1, 3, 2}),
                                         (0.96, {0, 1, 2, 3}), (1.0, {0, 1, 2, 3})])
def test_top_p_keeps_the_smallest_set_whose_mass_reaches_p(p, kept):
    assert _kept(top_p_filter(PROBS.log(), p)) == kept


def test_top_p_filters_each_row_on_its_own():
    logits = torch.stack([PROBS.log(), PROBS.flip(0).log()])  # (2, V)
    filtered = top_p_filter(logits, 0.79)
    assert _kept(filtered[0]) == {1, 3} and _kept(filtered[1]) == {2, 0}


def test_the_distribution_is_the_softmax_of_the_scaled_filtered_logits():
    logits = torch.tensor([[0.0, 2.0, -1.0, 3.0, 1.0]])
    probs = next_token_distribution(logits, temperature=0.5, top_k=2)
    scaled = [math.exp(2.0 / 0.5), math.exp(3.0 / 0.5)]
    expected = torch.tensor([[0.0, scaled[0] / sum(scaled), 0.0, scaled[1] / sum(scaled), 0.0]])
    torch.testing.assert_close(probs, expected)


@pytest.mark.parametrize(("settings", "message"), [
    (dict(temperature=0.0), "temperature=0.0 must be a finite number > 0"),
    (dict(temperature=-1.0), "temperature=-1.0"),
    (dict(temperature=float("nan")), "temperature=nan"),
    (dict(top_k=0), "top_k=0 must be an integer >= 1"),
    (dict(top_p=0.0), r"top_p=0.0 must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p=1.5 must be in \(0, 1\]"),
    (dict(max_new_tokens=0), "max_new_tokens=0 must be an integer >= 1"),
    (dict(num_samples=0), "num_samples=0 must be an integer >= 1"),
])
def test_invalid_settings_are_rejected_with_their_range(settings, message):
    values = dict(temperature=1.0, top_k=None, top_p=None, max_new_tokens=10, num_samples=1) | settings
    with pytest.raises(ValueError, match=message):
        check_sampling(**values)


class ScriptedModel:
    """A decoder-only model whose next-token logits are the same at every step, recording what it is fed."""

    def __init__(self, logits: list[float]):
        self.logits = torch.tensor(logits)
        self.fed: list[torch.Tensor] = []

    def decode_step(self, tokens, cache=None):
        self.fed.append(tokens)
        length = 0 if cache is None else cache
        return self.logits.expand(tokens.size(0), tokens.size(1), -1).clone(), length + tokens.size(1)


def _draw(model, seed, **settings):
    args = dict(eos_id=EOS, pad_id=PAD, bos_id=BOS, vocab_size=model.logits.numel(), max_new_tokens=20,
                num_samples=3) | settings
    steps = list(sample(model, [BOS, 5], generator=torch.Generator().manual_seed(seed), **args))
    return torch.stack(steps, dim=1)  # (N, steps)


def test_a_seed_makes_sampling_reproducible():
    model = ScriptedModel([5.0, 5.0, -30.0, 1.0, 1.0, 1.0, 1.0])  # PAD and BOS most probable: never drawn
    first, again, other = _draw(model, 0), _draw(model, 0), _draw(model, 1)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.isin(first, torch.tensor([PAD, BOS])).any()


def test_the_prompt_is_fed_once_then_one_token_a_step():
    model = ScriptedModel([0.0, 0.0, -9.0, 1.0, 1.0])
    _draw(model, 0, max_new_tokens=4)
    assert [tuple(t.shape) for t in model.fed] == [(3, 2), (3, 1), (3, 1), (3, 1)]


def test_a_sample_stops_at_eos_and_pads_while_the_others_go_on():
    model = ScriptedModel([0.0, 0.0, 0.0, 0.0])  # EOS (2) or token 3, evenly
    drawn = _draw(model, 3, num_samples=6, max_new_tokens=30)
    for row in drawn.tolist():
        if EOS in row:
            end = row.index(EOS)
            assert all(t == PAD for t in row[end + 1 :])
    assert (drawn == EOS).any(dim=1).all()  # every sample ended: the generator stopped before 30 steps


def test_top_k_one_is_the_most_probable_token():
    model = ScriptedModel([0.0, 0.0, -5.0, 0.5, 2.0, 1.0])
    assert (_draw(model, 0, top_k=1, max_new_tokens=5) == 4).all()


def test_a_prompt_beyond_the_learned_positions_is_an_error():
    model = ScriptedModel([0.0, 0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match=r"a prompt of 2 tokens plus max_new_tokens=20 exceeds the model's 16 learned "
                                         r"positions; shorten the prompt or use max_new_tokens <= 14"):
        _draw(model, 0, max_positions=16)
