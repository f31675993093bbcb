"""T5's pieces of nn/ against transformers' T5 modules and closed forms: the RMS norm, the relative position
buckets and bias, attention with an additive bias and scale 1, the gated feed-forward, and incremental
decoding with the relative bias (cache equals recompute)."""

import pytest
import torch
from torch.testing import assert_close

from transformer.config import ModelConfig
from transformer.decoding import beam_search
from transformer.models import build_model
from transformer.nn import MultiHeadAttention, padding_mask, scaled_dot_product_attention
from transformer.nn.attention_kernels import grouped_attention
from transformer.nn.layers import FeedForward
from transformer.nn.relative_position import RelativePositionBias, relative_position_bucket
from transformer.nn.rms_norm import RMSNorm

t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
T5Config = pytest.importorskip("transformers").T5Config


def test_rms_norm_equals_t5_layer_norm():
    torch.manual_seed(0)
    theirs = t5.T5LayerNorm(16, eps=1e-6)
    ours = RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        theirs.weight.normal_()
        ours.weight.copy_(theirs.weight)
    x = torch.randn(3, 5, 16) * 4 + 1  # a mean away from 0: a LayerNorm would give something else
    assert_close(ours(x), theirs(x), atol=0, rtol=0)
    assert (ours(x) - torch.nn.functional.layer_norm(x, (16,))).abs().max() > 0.1


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize(("buckets", "max_distance"), [(32, 128), (8, 20), (6, 10)])
def test_relative_position_buckets_equal_t5(bidirectional, buckets, max_distance):
    relative = torch.arange(-400, 401)[None, :] + torch.zeros(2, 1, dtype=torch.long)  # (2, 801)
    ours = relative_position_bucket(relative, bidirectional, buckets, max_distance)
    theirs = t5.T5Attention._relative_position_bucket(relative, bidirectional, buckets, max_distance)
    assert torch.equal(ours, theirs)
    assert ours.min() >= 0 and ours.max() == buckets - 1


@pytest.mark.parametrize("is_decoder", [False, True])
def test_relative_position_bias_equals_t5_compute_bias_with_an_offset(is_decoder):
    torch.manual_seed(0)
    config = T5Config(d_model=16, d_kv=4, num_heads=4, relative_attention_num_buckets=8,
                      relative_attention_max_distance=20, is_decoder=is_decoder)
    theirs = t5.T5Attention(config, has_relative_attention_bias=True)
    ours = RelativePositionBias(4, not is_decoder, 8, 20)
    with torch.no_grad():
        theirs.relative_attention_bias.weight.normal_()
        ours.embedding.weight.copy_(theirs.relative_attention_bias.weight)
    for queries, keys, offset in ((30, 30, 0), (1, 13, 12), (3, 40, 37)):
        expected = theirs.compute_bias(queries, keys, past_seen_tokens=offset)
        assert_close(ours(queries, keys, offset), expected, atol=0, rtol=0)


@pytest.mark.parametrize("need_weights", [True, False])  # the explicit path and torch's fused kernel
def test_attention_with_bias_and_scale_1_equals_the_closed_form(need_weights):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 8)
    bias = torch.randn(1, 3, 4, 6)
    tokens = torch.tensor([[5, 5, 5, 5, 5, 5], [5, 5, 5, 0, 0, 0]])
    mask = padding_mask(tokens, pad_id=0)  # (2, 1, 1, 6)
    out, _ = scaled_dot_product_attention(q, k, v, mask, need_weights=need_weights, bias=bias, scale=1.0)
    scores = (q @ k.transpose(-1, -2) + bias).masked_fill(~mask, float("-inf"))  # no 1/sqrt(Dh)
    assert_close(out, torch.softmax(scores, dim=-1) @ v, atol=1e-5, rtol=1e-5)
    paper, _ = scaled_dot_product_attention(q, k, v, mask, need_weights=need_weights)
    assert (paper - out).abs().max() > 0.1  # the defaults stay the paper's


def test_grouped_attention_with_bias_equals_attention_over_repeated_keys():
    torch.manual_seed(0)
    q, k, v = torch.randn(6, 2, 1, 4), torch.randn(2, 2, 5, 4), torch.randn(2, 2, 5, 4)
    bias = torch.randn(1, 2, 1, 5)
    grouped, _ = grouped_attention(scaled_dot_product_attention, q, k, v, None, 3, bias=bias, scale=1.0)
    repeated, _ = scaled_dot_product_attention(q, k.repeat_interleave(3, 0), v.repeat_interleave(3, 0),
                                               bias=bias, scale=1.0)
    assert_close(grouped, repeated, atol=1e-6, rtol=1e-6)


def test_multi_head_attention_with_bias_and_no_scale_equals_t5_attention():
    torch.manual_seed(0)
    config = T5Config(d_model=16, d_kv=4, num_heads=4, dropout_rate=0.0)
    theirs = t5.T5Attention(config).eval()
    ours = MultiHeadAttention(16, 4, bias=False, scale=1.0).eval()
    with torch.no_grad():
        for mine, hf in (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"), ("out_proj", "o")):
            getattr(ours, mine).weight.copy_(getattr(theirs, hf).weight)
    x, bias = torch.randn(2, 5, 16), torch.randn(1, 4, 5, 5)
    expected = theirs(x, position_bias=bias)[0]
    assert_close(ours(x, bias=bias)[0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("gated", "activation", "module"), [
    (False, "relu", "T5DenseActDense"), (True, "gelu_new", "T5DenseGatedActDense")])
def test_feed_forward_without_biases_equals_t5(gated, activation, module):
    torch.manual_seed(0)
    config = T5Config(d_model=16, d_ff=24, dropout_rate=0.0,
                      feed_forward_proj="gated-gelu" if gated else "relu")
    theirs = getattr(t5, module)(config).eval()
    ours = FeedForward(16, 24, activation=activation, bias=False, gated=gated).eval()
    names = {"fc1": "wi_0", "fc1_linear": "wi_1", "fc2": "wo"} if gated else {"fc1": "wi", "fc2": "wo"}
    with torch.no_grad():
        for mine, hf in names.items():
            getattr(ours, mine).weight.copy_(getattr(theirs, hf).weight)
    x = torch.randn(2, 5, 16)
    assert_close(ours(x), theirs(x), atol=1e-6, rtol=1e-6)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


T5_LIKE = dict(d_model=32, n_heads=4, d_ff=48, n_encoder_layers=2, n_decoder_layers=2, dropout=0.0,
               src_vocab_size=40, tgt_vocab_size=40, positional="relative", relative_buckets=8,
               relative_max_distance=12, norm="rms", linear_bias=False, gated_ffn=True, activation="gelu_new",
               attention_scale=1.0, norm_first=True, scale_embedding=False, output_scale=32**-0.5,
               layer_norm_eps=1e-6, pad_id=0, bos_id=0, eos_id=1)


def test_cache_equals_recompute_with_the_relative_bias():
    torch.manual_seed(0)
    model = build_model(ModelConfig(**T5_LIKE)).eval()
    src = torch.randint(2, 40, (3, 9))
    src[1, 5:] = 0
    tgt = torch.randint(2, 40, (3, 16))  # longer than max_exact: the logarithmic buckets are reached
    tgt[:, 0] = 0
    with torch.no_grad():
        full = model(src, tgt)  # (B, T, V)
        mask = padding_mask(src, 0)
        memory = model.encode(src, mask)
        for inference in (False, True):  # unbuffered and buffered caches
            with torch.inference_mode(inference):
                logits, cache = model.decode_step(tgt[:, :1], memory, mask)
                steps = [logits]
                for t in range(1, tgt.size(1)):
                    logits, cache = model.decode_step(tgt[:, t : t + 1], memory, mask, cache)
                    steps.append(logits)
            assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cached_beam_search_equals_uncached_with_the_relative_bias():
    torch.manual_seed(1)
    model = build_model(ModelConfig(**T5_LIKE)).eval()
    src = torch.randint(2, 40, (3, 7))
    src[0, 4:] = 0
    ids = dict(pad_id=0, bos_id=0, eos_id=1, beam_size=3, n_best=3, max_new_tokens=10, alpha=0.0)
    cached, uncached = beam_search(model, src, **ids), beam_search(model, src, **ids, use_cache=False)
    for a, b in zip(cached, uncached, strict=True):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert_close(torch.tensor([h.score for h in a]), torch.tensor([h.score for h in b]), atol=1e-5, rtol=1e-5)


def test_t5_options_build_no_biases_and_rms_norms():
    model = build_model(ModelConfig(**T5_LIKE))
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.bias is None for m in linears)
    assert model.encoder.final_norm.__class__ is RMSNorm and model.src_embed.positions is None
    assert model.decoder.position_bias.bidirectional is False and model.encoder.position_bias.bidirectional
