import pytest
import torch
from torch import nn
from torch.testing import assert_close

from tests.nn.torch_reference import copy_attention
from transformer.nn import MultiHeadAttention, causal_mask, padding_mask, scaled_dot_product_attention

B, T, S, D, H = 3, 5, 7, 32, 4


def _padded_tokens(lengths, total):
    tokens = torch.randint(3, 20, (len(lengths), total))
    for i, n in enumerate(lengths):
        tokens[i, n:] = 0
    return tokens


def test_explicit_math_equals_fused_kernel_with_mask():
    q, k, v = torch.randn(B, H, T, 8), torch.randn(B, H, S, 8), torch.randn(B, H, S, 8)
    mask = padding_mask(_padded_tokens([7, 4, 1], S), pad_id=0)
    slow, weights = scaled_dot_product_attention(q, k, v, mask, need_weights=True)
    fast, none = scaled_dot_product_attention(q, k, v, mask)
    assert none is None
    assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    assert_close(weights.sum(-1), torch.ones(B, H, T))
    assert (weights[1, :, :, 4:] == 0).all()


def test_weights_match_the_closed_form():
    q, k, v = torch.randn(1, 1, 2, 4), torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
    out, weights = scaled_dot_product_attention(q, k, v, need_weights=True)
    expected = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1)  # sqrt(4) = 2
    assert_close(weights, expected)
    assert_close(out, expected @ v)


@pytest.mark.parametrize("masking", ["padding", "causal", "both"])
def test_multi_head_attention_equals_torch(masking):
    ours = MultiHeadAttention(D, H).eval()
    theirs = nn.MultiheadAttention(D, H, batch_first=True).eval()
    copy_attention(ours, theirs)
    x = torch.randn(B, S, D)
    tokens = _padded_tokens([7, 5, 2], S)
    pad = padding_mask(tokens, 0)
    causal = causal_mask(S)
    mask = {"padding": pad, "causal": causal, "both": pad & causal}[masking]
    expected, _ = theirs(x, x, x, key_padding_mask=(~pad[:, 0, 0]) if masking != "causal" else None,
                         attn_mask=(~causal[0, 0]) if masking != "padding" else None, need_weights=False)
    for need_weights in (False, True):
        out, _ = ours(x, mask=mask, need_weights=need_weights)
        assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_cross_attention_equals_torch_and_weights_average_like_torch():
    ours = MultiHeadAttention(D, H).eval()
    theirs = nn.MultiheadAttention(D, H, batch_first=True).eval()
    copy_attention(ours, theirs)
    query, memory = torch.randn(B, T, D), torch.randn(B, S, D)
    pad = padding_mask(_padded_tokens([7, 3, 6], S), 0)
    expected, expected_weights = theirs(query, memory, memory, key_padding_mask=~pad[:, 0, 0])
    out, weights = ours(query, memory, mask=pad, need_weights=True)
    assert weights.shape == (B, H, T, S)
    assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert_close(weights.mean(1), expected_weights, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("need_weights", [False, True])
def test_fully_masked_rows_give_zeros_and_finite_gradients(need_weights):
    attn = MultiHeadAttention(D, H)
    x = torch.randn(2, S, D, requires_grad=True)
    mask = torch.ones(2, 1, S, S, dtype=torch.bool)
    mask[1, :, 2, :] = False  # query 2 of example 1 sees nothing
    mask[0] = False  # example 0 sees nothing at all
    out, _ = attn(x, mask=mask, need_weights=need_weights)
    assert torch.isfinite(out).all()
    # With no key to read, the attention output is 0, so the layer returns just the output bias.
    assert_close(out[0], attn.out_proj.bias.expand(S, D))
    assert_close(out[1, 2], attn.out_proj.bias)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in attn.parameters())


def test_d_model_not_divisible_by_heads_names_both():
    with pytest.raises(ValueError, match=r"d_model=30 is not divisible by n_heads=4"):
        MultiHeadAttention(30, 4)


def test_mask_that_does_not_broadcast_is_explained():
    attn = MultiHeadAttention(D, H)
    x = torch.randn(2, S, D)
    with pytest.raises(ValueError, match=r"shape \(2, 1, 1, 6\) does not broadcast to \(B, H, T, S\) = \(2, 4, 7, 7\)"):
        attn(x, mask=torch.ones(2, 1, 1, 6, dtype=torch.bool))


def test_float_mask_is_rejected_with_the_fix():
    attn = MultiHeadAttention(D, H)
    x = torch.randn(2, S, D)
    with pytest.raises(ValueError, match=r"must be a bool tensor.*torch.float32"):
        attn(x, mask=torch.zeros(2, 1, 1, S))


def test_causal_mask_is_bottom_right_aligned_for_short_queries():
    full = causal_mask(5)
    assert_close(causal_mask(2, 5), full[:, :, 3:, :])
    assert causal_mask(1, 5).all()
    with pytest.raises(ValueError, match="query_len=6 exceeds key_len=5"):
        causal_mask(6, 5)
