"""Scaled dot-product attention (section 3.2.1) and multi-head attention (section 3.2.2).

Shapes: B batch, T query length, S key length, D d_model, H heads, Dh = D // H.
Masks are boolean, True = may attend, broadcastable to (B, H, T, S) (see masks.py).
Two hooks for descendants of the paper, both off by default: an additive float `bias` on the scores (T5's
relative positions, relative_position.py) and a `scale` other than 1/sqrt(Dh) (T5: 1).
The speed paths are beside this file, each switched on explicitly: the choice of attention kernel in
attention_kernels.py, the key/value cache in kv_cache.py, packed inference weights in packed.py.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from transformer.nn.attention_kernels import fused_attention, grouped_attention
from transformer.nn.kv_cache import KVCache
from transformer.nn.masks import check_mask
from transformer.nn.packed import Packable


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    dropout: float = 0.0,
    need_weights: bool = False,
    bias: Tensor | None = None,
    scale: float | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(Dh)) V, with masked keys removed.

    q: (B, H, T, Dh), k and v: (B, H, S, Dh), mask: bool broadcastable to (B, H, T, S).
    bias: float broadcastable to (B, H, T, S), added to the scores; scale: replaces 1/sqrt(Dh).
    Returns the output (B, H, T, Dh) and, if need_weights, the weights (B, H, T, S).
    A query row whose keys are all masked gets weights 0 and output 0, never NaN.
    Without need_weights, torch's fused kernel computes the same thing without holding the weights.
    """
    if mask is not None:
        check_mask(mask, q.size(0), q.size(1), q.size(2), k.size(2))
        has_key = mask.any(dim=-1, keepdim=True)  # (B|1, H|1, T|1, 1)
        mask = mask | ~has_key  # an empty row attends everywhere (finite softmax); its output is zeroed below
    if not need_weights:
        out = fused_attention(q, k, v, mask, dropout, bias, scale)  # (B, H, T, Dh)
        return (out if mask is None else out.masked_fill(~has_key, 0.0)), None

    if scale is None:
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, T, S)
    else:
        scores = q @ k.transpose(-2, -1) * scale  # (B, H, T, S)
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # (B, H, T, S)
    if mask is not None:
        weights = weights.masked_fill(~has_key, 0.0)
    if dropout > 0.0:
        weights = nn.functional.dropout(weights, p=dropout)
    return weights @ v, weights  # (B, H, T, Dh), (B, H, T, S)


class MultiHeadAttention(Packable):
    """MultiHead(Q, K, V) = Concat(head_1, ..., head_H) W^O, head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V).

    The parameters are the four projections q_proj, k_proj, v_proj, out_proj (W^Q, W^K, W^V for all heads
    at once, and W^O), the names checkpoints and the torch.nn / Hugging Face mappings use.
    """

    # Packed inference forms (packed.py): Q, K, V of one input as one product; K, V of the memory as one.
    PACKS = {"qkv": ("q_proj", "k_proj", "v_proj"), "q": ("q_proj",), "kv": ("k_proj", "v_proj"),
             "out": ("out_proj",)}

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True,
                 scale: float | None = None):
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
        self.scale = scale  # None: the paper's 1/sqrt(Dh)
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
        bias: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """query: (B, T, D); key_value: (B, S, D), or None for self-attention; bias: additive, (B|1, H, T, S).

        Returns (B, T, D) and the per-head weights (B, H, T, S) when need_weights, else None.
        """
        # 1. Project the queries, keys and values, and split each into H heads.
        q, k, v = self._project(query, key_value, cache)  # (B, H, T, Dh), (B, H, S, Dh), (B, H, S, Dh)
        # 2. Attend, every head at once.
        dropout = self.dropout if self.training else 0.0
        beams = 1 if cache is None else cache.beams
        if beams == 1:
            out, weights = scaled_dot_product_attention(q, k, v, mask, dropout, need_weights, bias,
                                                        self.scale)  # (B, H, T, Dh)
        else:  # beam search: the K beams of an example read its memory once (DecoderCache.set_beam_size)
            out, weights = grouped_attention(scaled_dot_product_attention, q, k, v, mask, beams,
                                             dropout=dropout, need_weights=need_weights, bias=bias,
                                             scale=self.scale)
        # 3. Concatenate the heads and apply W^O.
        out = out.transpose(1, 2).reshape(out.size(0), out.size(2), self.d_model)  # (B, T, D)
        packed = self.packed("out")
        return (self.out_proj(out) if packed is None else packed(out)), weights  # (B, T, D), (B, H, T, S)

    def _project(self, query: Tensor, key_value: Tensor | None, cache: KVCache | None) -> tuple[Tensor, ...]:
        """Q from the queries; K and V from key_value (self-attention: the queries), through the cache."""
        source = query if key_value is None else key_value
        if cache is not None and cache.static and cache.k is not None:
            # Cross-attention after the first decoding step: K and V of the memory are cached.
            return self._heads(self._linear("q", "q_proj", query)), cache.k, cache.v
        packed = self.packed("qkv" if key_value is None else "kv")
        if packed is None:  # the paper: a product with each of W^Q, W^K, W^V
            q, k, v = self.q_proj(query), self.k_proj(source), self.v_proj(source)  # (B, L, D) each
        elif key_value is None:
            q, k, v = packed(query).chunk(3, dim=-1)  # (B, T, D) each
        else:
            q = self._linear("q", "q_proj", query)  # (B, T, D)
            k, v = packed(source).chunk(2, dim=-1)  # (B, S, D) each
        q, k, v = self._heads(q), self._heads(k), self._heads(v)  # (B, H, L, Dh) each
        if cache is not None:
            k, v = cache.update(k, v)  # (B, H, S, Dh) each, the cached positions included
        return q, k, v

    def _linear(self, pack: str, name: str, x: Tensor) -> Tensor:
        packed = self.packed(pack)
        return self._modules[name](x) if packed is None else packed(x)

    def _heads(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, H, L, Dh)."""
        return x.view(x.size(0), x.size(1), self.n_heads, self.d_head).transpose(1, 2)


def _divisors_hint(n: int) -> str:
    return ", ".join(str(d) for d in range(1, min(n, 64) + 1) if n % d == 0)
