"""The speed paths compute what the plain ones do: packed projections, weight copies, KV buffers, dropout."""

import warnings

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from transformer.config import ModelConfig
from transformer.decoding import beam_search, greedy_search
from transformer.models import build_model
from transformer.nn import (
    KVCache,
    MultiHeadAttention,
    pack_inference_weights,
    padding_mask,
    scaled_dot_product_attention,
)
from transformer.nn.attention_kernels import grouped_attention
from transformer.nn.dropout import Dropout
from transformer.nn.packed import ONEDNN_MIN_ROWS, onednn_available, pack_linears

D, H = 32, 4


def test_grouped_attention_equals_attention_over_repeated_keys():
    groups, g, t, s = 3, 4, 2, 5
    q = torch.randn(groups * g, H, t, 8)
    k, v = torch.randn(groups, H, s, 8), torch.randn(groups, H, s, 8)
    mask = torch.ones(groups, 1, 1, s, dtype=torch.bool)
    mask[1, ..., 3:] = False
    mask[2] = False  # an example with no key at all
    repeat = torch.arange(groups).repeat_interleave(g)
    for need_weights in (False, True):
        expected, expected_w = scaled_dot_product_attention(q, k[repeat], v[repeat], mask[repeat], 0.0, need_weights)
        got, got_w = grouped_attention(scaled_dot_product_attention, q, k, v, mask[repeat], g,
                                       dropout=0.0, need_weights=need_weights)
        assert_close(got, expected, atol=1e-6, rtol=1e-5)
        if need_weights:
            assert_close(got_w, expected_w)


def test_cache_buffers_append_and_reorder_like_concatenation():
    torch.manual_seed(0)
    steps = [(torch.randn(3, H, t, 8), torch.randn(3, H, t, 8)) for t in (2, 1, 1)]
    index = torch.tensor([2, 2, 0])
    with torch.inference_mode():
        cache = KVCache(buffered=True)
        for k, v in steps:
            cache.update(k, v)
        assert cache.length == 4
        assert_close(cache.k, torch.cat([k for k, _ in steps], dim=2))
        kept_v = cache.v.clone()
        cache.reorder(index)
        assert_close(cache.v, kept_v[index])
        cache.reorder(torch.tensor([1, 0, 2]))  # reuses the first buffers: the values must still be right
        assert_close(cache.v, kept_v[index][[1, 0, 2]])
        cache.reorder(torch.tensor([0, 0, 2]))  # one row moves: copied in place
        assert_close(cache.v, kept_v[index][[1, 0, 2]][[0, 0, 2]])
        k, v = torch.randn(3, H, 70, 8), torch.randn(3, H, 70, 8)  # grows past the first capacity
        before = cache.k.clone()
        cache.update(k, v)
        assert cache.length == 74
        assert_close(cache.k, torch.cat([before, k], dim=2))


def test_cache_built_from_tensors_is_copied_before_appending():
    past_k, past_v = torch.randn(2, H, 3, 8), torch.randn(2, H, 3, 8)
    cache = KVCache(buffered=True, k=past_k, v=past_v)
    new_k, new_v = torch.randn(2, H, 1, 8), torch.randn(2, H, 1, 8)
    with torch.inference_mode():
        k, v = cache.update(new_k, new_v)
    assert_close(k, torch.cat([past_k, new_k], dim=2))
    assert_close(v, torch.cat([past_v, new_v], dim=2))
    assert cache.k is k and cache.length == 4


def test_inference_weights_follow_parameter_updates():
    torch.manual_seed(0)
    attn = MultiHeadAttention(D, H).eval()
    x = torch.randn(2, 5, D)
    with torch.no_grad():
        before, _ = attn(x)
        attn.k_proj.weight.mul_(2.0)  # in place, as an optimizer step or load_state_dict does
        after, _ = attn(x)
    expected, _ = attn(x)  # with autograd: the plain projections, no copies
    assert not torch.allclose(before, after)
    assert_close(after, expected, atol=1e-6, rtol=1e-5)
    attn.load_state_dict(MultiHeadAttention(D, H).state_dict())
    with torch.no_grad():
        reloaded, _ = attn(x)
    assert_close(reloaded, attn(x)[0], atol=1e-6, rtol=1e-5)


def test_packed_projections_keep_the_state_dict_names():
    keys = set(MultiHeadAttention(D, H).state_dict())
    assert keys == {f"{p}_proj.{w}" for p in "qkv" for w in ("weight", "bias")} | {"out_proj.weight", "out_proj.bias"}


def test_dropout_keeps_1_minus_p_scaled_and_its_gradient_uses_the_same_mask():
    torch.manual_seed(0)
    drop = Dropout(0.25).train()
    x = torch.ones(400, 500, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.005
    assert_close(y[kept], torch.full_like(y[kept], 1 / 0.75))
    y.sum().backward()
    assert_close(x.grad, y.detach())
    assert drop.eval()(x) is x


def _tiny(**changes):
    config = ModelConfig.preset("tiny", src_vocab_size=20, tgt_vocab_size=20, **changes)
    return build_model(config).eval()


def test_min_new_tokens_suppresses_eos_in_greedy_and_beam():
    torch.manual_seed(0)
    model = _tiny(output_bias=True)
    with torch.no_grad():
        model.output_proj.bias[2] = 100.0  # EOS (id 2) wherever it is allowed
    src = torch.randint(3, 20, (2, 6))
    ids = dict(pad_id=0, bos_id=1, eos_id=2, max_new_tokens=9)
    assert all(len(out) < 9 for out in greedy_search(model, src, **ids))
    assert all(len(out) == 9 for out in greedy_search(model, src, **ids, min_new_tokens=9))
    hyps = beam_search(model, src, **ids, beam_size=3, min_new_tokens=9)
    assert all(len(best[0].tokens) == 9 for best in hyps)
    with pytest.raises(ValueError, match="min_new_tokens=-1"):
        greedy_search(model, src, **ids, min_new_tokens=-1)


def test_int8_dynamic_quantized_model_decodes_through_the_module_path():
    torch.manual_seed(0)
    model = _tiny()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    src = torch.randint(3, 20, (3, 5))
    src[1, 3:] = 0
    out = beam_search(quantized, src, pad_id=0, bos_id=1, eos_id=2, beam_size=2, max_new_tokens=6)
    assert len(out) == 3 and all(len(best[0].tokens) <= 6 for best in out)


def test_cached_beam_search_with_shared_memory_rows_equals_uncached_with_padding():
    torch.manual_seed(3)
    model = _tiny()
    src = torch.randint(3, 20, (3, 7))
    src[0, 4:] = 0
    ids = dict(pad_id=0, bos_id=1, eos_id=2, beam_size=3, n_best=3, max_new_tokens=6)
    cached, uncached = beam_search(model, src, **ids), beam_search(model, src, **ids, use_cache=False)
    for a, b in zip(cached, uncached, strict=True):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert_close(torch.tensor([h.score for h in a]), torch.tensor([h.score for h in b]), atol=1e-5, rtol=1e-5)
    assert padding_mask(src, 0)[0, 0, 0, 4:].logical_not().all()


def test_packed_weights_give_the_plain_outputs_and_are_used_only_without_autograd():
    torch.manual_seed(0)
    model = _tiny()
    src, tgt = torch.randint(3, 20, (2, 6)), torch.randint(3, 20, (2, 5))
    src[1, 4:] = 0
    with torch.no_grad():
        plain = model(src, tgt)
    pack_inference_weights(model)
    attn = model.decoder.layers[0].self_attn
    assert attn.packed("qkv") is None  # autograd is on here: the parameters themselves are used
    with torch.no_grad():
        assert attn.packed("qkv") is not None and model.packed("output") is not None
        assert_close(model(src, tgt), plain, atol=1e-5, rtol=1e-5)
    logits = model(src, tgt)  # with autograd: gradients reach the parameters
    logits.sum().backward()
    assert attn.q_proj.weight.grad is not None and model.output_proj.weight.grad is not None


def test_packed_weights_are_dropped_by_train_and_load_state_dict():
    model = pack_inference_weights(_tiny())
    ffn = model.encoder.layers[0].ff
    with torch.no_grad():
        assert ffn.packed("fc1") is not None
        model.train()
        assert ffn.packed("fc1") is None and model.packed("output") is None
        pack_inference_weights(model)
        model.load_state_dict(_tiny().state_dict())
        assert ffn.packed("fc1") is None
        pack_inference_weights(model)
        model.encoder.layers[0].ff.fc1 = nn.Linear(D, 64)  # a replaced layer is called as a module
        assert ffn.packed("fc1") is None and ffn.packed("fc2") is not None


def test_searches_on_a_packed_model_equal_the_plain_ones_also_from_concurrent_threads():
    from concurrent.futures import ThreadPoolExecutor

    torch.manual_seed(1)
    model = _tiny()
    src = torch.randint(3, 20, (4, 7))
    src[2, 5:] = 0
    ids = dict(pad_id=0, bos_id=1, eos_id=2, max_new_tokens=8)
    plain_greedy = greedy_search(model, src, **ids)
    plain_beam = [[h.tokens for h in hyps] for hyps in beam_search(model, src, **ids, beam_size=3, n_best=3)]
    pack_inference_weights(model)

    def search(i: int) -> tuple:
        beams = beam_search(model, src, **ids, beam_size=3, n_best=3)
        return greedy_search(model, src, **ids), [[h.tokens for h in hyps] for hyps in beams]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(search, range(8)))
    assert all(result == (plain_greedy, plain_beam) for result in results)


def test_beam_sharing_of_the_memory_is_switched_on_by_set_beam_size():
    torch.manual_seed(2)
    model = _tiny()
    src = torch.randint(3, 20, (2, 5))
    with torch.inference_mode():
        memory = model.encode(src, padding_mask(src, 0))
        bos = torch.ones(2, 1, dtype=torch.long)
        _, cache = model.decode_step(bos, memory, padding_mask(src, 0), None)
        assert all(cross.beams == 1 for _, cross in cache.layers)
        cache.set_beam_size(3)
        self_cache, cross = cache.layers[0]
        assert cross.beams == 3 and cross.k.size(0) == 2 and self_cache.k.size(0) == 6
        cache.reset()
        assert cache.length == 0 and cross.k is None and cross.beams == 1


@pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN linear")
@pytest.mark.parametrize("rows", [1, ONEDNN_MIN_ROWS - 1, ONEDNN_MIN_ROWS, 130])
@pytest.mark.parametrize("bias", [True, False])
def test_packed_linear_equals_torch_linear_on_both_kernels(rows, bias):
    torch.manual_seed(rows)
    layers = (nn.Linear(24, 40, bias=bias), nn.Linear(24, 8, bias=bias))
    packed = pack_linears(layers)
    assert packed.onednn_weight is not None
    x = torch.randn(rows, 3, 24)[:, 1]  # not contiguous
    with torch.inference_mode():
        expected = torch.cat([nn.functional.linear(x, m.weight, m.bias) for m in layers], dim=-1)
        assert_close(packed(x), expected, atol=1e-5, rtol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast decides the dtype, as for nn.Linear
            assert packed(x).dtype == layers[0](x).dtype == torch.bfloat16


def test_beam_search_over_many_rows_on_a_packed_model_equals_the_plain_one():
    torch.manual_seed(3)
    model = _tiny()
    src = torch.randint(3, 20, (12, 6))  # 12 x 3 beams: products of 36 rows, past ONEDNN_MIN_ROWS
    src[5, 3:] = 0
    ids = dict(pad_id=0, bos_id=1, eos_id=2, max_new_tokens=8)
    plain = [[(h.tokens, h.score) for h in hyps] for hyps in beam_search(model, src, **ids, beam_size=3, n_best=3)]
    pack_inference_weights(model)
    packed = [[(h.tokens, h.score) for h in hyps] for hyps in beam_search(model, src, **ids, beam_size=3, n_best=3)]
    assert [[t for t, _ in hyps] for hyps in packed] == [[t for t, _ in hyps] for hyps in plain]
    assert_close(torch.tensor([[s for _, s in h] for h in packed]), torch.tensor([[s for _, s in h] for h in plain]),
                 atol=1e-5, rtol=1e-5)
