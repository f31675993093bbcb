"""Which kernel computes attention: the speed paths beside the paper's math of attention.py.

- `fused_attention`: torch's F.scaled_dot_product_attention (flash / memory-efficient kernels), which never
  holds the (T, S) weights; on the CPU under autocast it runs in fp32 (see the function).
- `grouped_attention`: beam search's cross-attention when the memory is kept once per example and the K
  beams of an example read it (switched on by `DecoderCache.set_beam_size`, never guessed from shapes).
- `skip_full_mask`: no mask when nothing is masked.
Each has an equivalence test against the plain path (tests/nn/test_inference_paths.py); their measured
effect is in docs/PERFORMANCE.md.

Shapes: B batch, H heads, T query length, S key length, Dh head dim; N = G * M query rows over M key rows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from transformer.nn.masks import check_mask
from transformer.nn.tracing import tracing

Attention = Callable[..., tuple[Tensor, Tensor | None]]


def attention_in_fp32(x: Tensor) -> bool:
    """Whether attention on `x` runs in fp32 although autocast is on: on the CPU, where torch's bf16
    flash-attention backward is much slower than its fp32 one (figures: docs/PERFORMANCE.md), so there only
    the matrix products around attention run in bf16."""
    return x.device.type == "cpu" and torch.is_autocast_enabled("cpu")


def fused_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float = 0.0,
                    bias: Tensor | None = None, scale: float | None = None) -> Tensor:
    """softmax(Q K^T / sqrt(Dh)) V through torch's fused kernel: (B, H, T, Dh).

    `mask` is bool, True = may attend, and every query row must have a key it may attend (the caller zeroes
    the rows that had none, as scaled_dot_product_attention does). An additive `bias` goes to the kernel as a
    float mask, -inf where `mask` is False; `scale` (None: 1/sqrt(Dh)) multiplies Q K^T.
    """
    fp32 = attention_in_fp32(q)
    if bias is not None:
        bias = bias.to(torch.float32 if fp32 else q.dtype)
        mask = bias if mask is None else torch.where(mask, bias, float("-inf"))  # (B|1, H, T, S)
    if not fp32:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)
    with torch.autocast("cpu", enabled=False):
        out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=dropout,
                                             scale=scale)
    return out.to(q.dtype)  # (B, H, T, Dh)


def grouped_attention(
    attention: Attention, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, groups_of: int, **kwargs
) -> tuple[Tensor, Tensor | None]:
    """`attention` of N = G * M query rows over M key rows, G = `groups_of`: query rows g*G .. g*G + G - 1
    all read key row g.

    That is beam search's cross-attention when the memory is kept once per example (G = beam size, the beams
    of an example being consecutive rows): the G beams become G times as many query positions of one
    attention over the shared keys, which reads those keys once instead of G times. Same result as
    `attention` on keys and values repeated G times.
    q: (N, H, T, Dh), k and v: (M, H, S, Dh), mask: bool and bias (kwargs) float, broadcastable to (N, H, T, S).
    """
    rows, heads, length, d_head = q.shape
    groups, keys = k.size(0), k.size(2)
    if rows != groups * groups_of:
        raise ValueError(f"{rows} query rows cannot share {groups} key rows in groups of {groups_of}")
    g = groups_of

    def to_groups(x: Tensor, last: int) -> Tensor:  # (N, h, T, last) -> (M, h, G * T, last)
        x = x.reshape(groups, g, x.size(1), length, last).transpose(1, 2)  # (M, h, G, T, last)
        return x.reshape(groups, x.size(1), g * length, last)

    def from_groups(x: Tensor) -> Tensor:  # (M, H, G * T, last) -> (N, H, T, last)
        return x.reshape(groups, heads, g, length, x.size(-1)).transpose(1, 2).reshape(rows, heads, length, -1)

    if mask is not None:
        check_mask(mask, rows, heads, length, keys)
        mask = to_groups(mask.expand(rows, mask.size(1) if mask.dim() == 4 else 1, length, keys), keys)
    if kwargs.get("bias") is not None:
        kwargs["bias"] = to_groups(kwargs["bias"].expand(rows, heads, length, keys), keys)
    out, weights = attention(to_groups(q, d_head), k, v, mask, **kwargs)
    return from_groups(out), None if weights is None else from_groups(weights)


def skip_full_mask(mask: Tensor | None) -> Tensor | None:
    """None in place of a mask that lets every query see every key (no padding), which spares each layer
    the masking work. Checked only without autograd on the CPU outside a tracer, where reading the answer
    back is cheap; elsewhere (a GPU sync, a data-dependent branch in a graph) the mask is kept as it is."""
    if mask is None or mask.device.type != "cpu" or torch.is_grad_enabled() or tracing():
        return mask
    return None if bool(mask.all()) else mask
