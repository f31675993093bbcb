"""Greedy search on scripted models, and cache / batch invariances on a real one."""

import pytest
import torch

from tests.decoding.scripted import BOS, EOS, PAD, VOCAB, A, B, C, ScriptedModel, fixed, tiny_transformer
from transformer.decoding import greedy_search

IDS = dict(pad_id=PAD, bos_id=BOS, eos_id=EOS)
SRC = torch.tensor([[7, 8, 9]])


def test_takes_the_most_probable_token_until_eos():
    table = fixed({(): {A: 0.6, B: 0.4}, (A,): {C: 0.4, A: 0.3, B: 0.3}, (A, C): {EOS: 0.7, A: 0.3}})
    assert greedy_search(ScriptedModel(table), SRC, **IDS) == [[A, C]]


def test_pad_and_bos_are_never_produced_even_when_most_probable():
    table = fixed({(): {PAD: 0.5, BOS: 0.3, A: 0.15, EOS: 0.05}, (A,): {BOS: 0.9, EOS: 0.1}})
    assert greedy_search(ScriptedModel(table), SRC, **IDS) == [[A]]


def test_bos_that_doubles_as_eos_ends_the_output():
    # BART-style: decoding starts from EOS; it must still be producible as the end of the output.
    table = fixed({(): {A: 0.9, B: 0.1}, (A,): {BOS: 0.6, B: 0.4}})
    assert greedy_search(ScriptedModel(table), SRC, pad_id=PAD, bos_id=BOS, eos_id=BOS) == [[A]]


def test_length_limit_counts_the_source_without_padding():
    # Never EOS: the outputs are as long as the limits, int(1.5 * 1 + 2) = 3 and int(1.5 * 3 + 2) = 6.
    model = ScriptedModel(lambda source, prefix: {A: 0.6, B: 0.4})
    src = torch.tensor([[7, PAD, PAD], [7, 8, 9]])
    assert greedy_search(model, src, **IDS, max_len_a=1.5, max_len_b=2) == [[A] * 3, [A] * 6]
    assert greedy_search(model, src, **IDS, max_new_tokens=4) == [[A] * 4, [A] * 4]
    # The default is the source length + 50, as in the paper (section 6.1).
    assert [len(out) for out in greedy_search(model, src, **IDS)] == [51, 53]


def test_finished_rows_leave_the_batch_and_the_loop_stops_when_all_are_done():
    def by_source(source, prefix):  # source (5,) ends at once, (6,) after two tokens, (7,) after four
        return {EOS: 0.9, A: 0.1} if len(prefix) >= source[0] - 5 else {B: 0.9, EOS: 0.1}

    model = ScriptedModel(by_source)
    src = torch.tensor([[5], [7], [6]])
    assert greedy_search(model, src, **IDS, max_new_tokens=20) == [[], [B, B], [B]]
    assert [shape for shape, _ in model.step_calls] == [(3, 1), (2, 1), (1, 1)]
    assert model.reorders == [[1, 2], [0]]


def test_uncached_recomputes_the_whole_prefix():
    model = ScriptedModel(lambda source, prefix: {A: 0.6, EOS: 0.4} if len(prefix) < 3 else {EOS: 1.0})
    assert greedy_search(model, SRC, **IDS, use_cache=False) == [[A, A, A]]
    assert model.step_calls == [((1, t), False) for t in range(1, 5)]


def test_runs_in_eval_and_inference_mode_and_restores_training():
    model = ScriptedModel(lambda source, prefix: {EOS: 1.0}).train()
    greedy_search(model, SRC, **IDS)
    assert set(model.modes) == {(False, True)}
    assert model.training


@pytest.mark.parametrize("seed", [0, 2])
def test_real_model_cached_equals_uncached_and_batch_invariant(seed):
    model = tiny_transformer(seed=seed)
    torch.manual_seed(1)
    src = torch.randint(3, 12, (4, 7))  # (B, S)
    src[1, 3:] = PAD
    cached = greedy_search(model, src, **IDS, max_len_b=5)
    assert greedy_search(model, src, **IDS, max_len_b=5, use_cache=False) == cached
    assert greedy_search(model, src[1:2, :3], **IDS, max_len_b=5) == cached[1:2]
    assert model.training


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(max_new_tokens=0), "max_new_tokens=0"),
        (dict(max_len_b=-2), "max_len_b=-2"),
        (dict(eos_id=PAD), "pad_id=0 equals eos_id=0"),
        (dict(bos_id=-1), "bos_id=-1"),
        (dict(pad_id=VOCAB + 3), f"pad_id={VOCAB + 3} is outside the model's vocabulary of size {VOCAB}"),
    ],
)
def test_bad_settings_raise_value_errors_naming_the_value(settings, message):
    with pytest.raises(ValueError, match=message):
        greedy_search(ScriptedModel(lambda source, prefix: {EOS: 1.0}), SRC, **{**IDS, **settings})


def test_source_must_be_integer_ids_of_shape_batch_by_length():
    model = ScriptedModel(lambda source, prefix: {EOS: 1.0})
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        greedy_search(model, SRC[0], **IDS)
    with pytest.raises(ValueError, match="torch.float32"):
        greedy_search(model, SRC.float(), **IDS)
