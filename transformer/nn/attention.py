"""Scaled dot-product attention (section 3.2.1) and multi-head attention (section 3.2.2).

Shapes: B batch, T query length, S key length, D d_model, H heads, Dh = D // H.
Masks are boolean, True = may attend, broadcastable to (B, H, T, S) (see masks.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformer.nn.masks import check_mask


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    dropout: float = 0.0,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """softmax(Q K^T / sqrt(Dh)) V, with masked keys removed.

    q: (B, H, T, Dh), k and v: (B, H, S, Dh), mask: bool broadcastable to (B, H, T, S).
    Returns the output (B, H, T, Dh) and, if need_weights, the weights (B, H, T, S).
    A query row whose keys are all masked gets weights 0 and output 0, never NaN.
    Without need_weights this takes torch's fused kernel; with it, the explicit math of the paper.
    """
    if mask is not None:
        check_mask(mask, q.size(0), q.size(1), q.size(2), k.size(2))
        has_key = mask.any(dim=-1, keepdim=True)  # (B|1, H|1, T|1, 1)
        # Let an empty row attend everywhere (finite softmax), then zero its output below.
        mask = mask | ~has_key
    if not need_weights:
        if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # torch's CPU flash-attention backward ran ~8x slower in bf16 than in fp32 here (profiled, see
            # docs/RESULTS.md), so under autocast attention runs in fp32; the matrix products stay in bf16.
            with torch.autocast("cpu", enabled=False):
                out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=dropout)
            out = out.to(q.dtype)  # (B, H, T, Dh)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # (B, H, T, Dh)
        return (out if mask is None else out.masked_fill(~has_key, 0.0)), None

    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, H, T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # (B, H, T, S)
    if mask is not None:
        weights = weights.masked_fill(~has_key, 0.0)
    if dropout > 0.0:
        weights = F.dropout(weights, p=dropout)
    return weights @ v, weights  # (B, H, T, Dh), (B, H, T, S)


@dataclass
class KVCache:
    """Keys and values of one attention layer kept between decoding steps.

    Self-attention appends the new step's keys and values; cross-attention (static=True) computes them
    once from the encoder memory and reuses them at every step.
    """

    static: bool = False
    k: Tensor | None = None  # (B, H, S, Dh)
    v: Tensor | None = None  # (B, H, S, Dh)

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.size(2)

    def reorder(self, index: Tensor) -> KVCache:
        """Keep batch rows `index` (beam reselection, or expanding B sources to B*K beams)."""
        if self.k is not None:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)
        return self


class MultiHeadAttention(nn.Module):
    """Multi-head attention (section 3.2.2): H scaled dot-product heads over learned projections of Q, K, V."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if d_model <= 0 or n_heads <= 0:
            raise ValueError(f"d_model={d_model} and n_heads={n_heads} must both be positive")
        if d_model % n_heads:
            raise ValueError(
                f"d_model={d_model} is not divisible by n_heads={n_heads}; "
                f"pick n_heads among the divisors of d_model (e.g. {_divisors_hint(d_model)})"
            )
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(
        self,
        query: Tensor,
        key_value: Tensor | None = None,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """query: (B, T, D); key_value: (B, S, D), or None for self-attention.

        Returns (B, T, D) and the per-head weights (B, H, T, S) when need_weights, else None.
        """
        source = query if key_value is None else key_value
        q = self._split_heads(self.q_proj(query))  # (B, H, T, Dh)
        if cache is not None and cache.static and cache.k is not None:
            k, v = cache.k, cache.v  # computed from the memory at the first step
        else:
            k = self._split_heads(self.k_proj(source))  # (B, H, S, Dh)
            v = self._split_heads(self.v_proj(source))  # (B, H, S, Dh)
            if cache is not None:
                if not cache.static and cache.k is not None:
                    k, v = torch.cat([cache.k, k], dim=2), torch.cat([cache.v, v], dim=2)
                cache.k, cache.v = k, v
        dropout = self.dropout if self.training else 0.0
        out, weights = scaled_dot_product_attention(q, k, v, mask, dropout, need_weights)
        return self.out_proj(self._merge_heads(out)), weights  # (B, T, D), (B, H, T, S) | None

    def _split_heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, L, Dh)

    def _merge_heads(self, x: Tensor) -> Tensor:
        batch, _, length, _ = x.shape
        return x.transpose(1, 2).reshape(batch, length, self.d_model)  # (B, L, D)


def _divisors_hint(n: int) -> str:
    return ", ".join(str(d) for d in range(1, min(n, 64) + 1) if n % d == 0)
