"""Scaled dot-product attention (section 3.2.1) and multi-head attention (section 3.2.2).

Shapes: B batch, T query length, S key length, D d_model, H heads, Dh = D // H.
Masks are boolean, True = may attend, broadcastable to (B, H, T, S) (see masks.py).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

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


def grouped_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, dropout: float = 0.0, need_weights: bool = False
) -> tuple[Tensor, Tensor | None]:
    """Attention of N = G * M query rows over M key rows: query rows g*G .. g*G + G - 1 all read key row g.

    That is beam search's cross-attention when the memory is kept once per example (G = beam size, the
    beams of an example being consecutive rows): the G beams become G times as many query positions of one
    attention over the shared keys, which reads those keys once instead of G times. Same result as
    scaled_dot_product_attention on keys and values repeated G times.
    q: (N, H, T, Dh), k and v: (M, H, S, Dh), mask: bool broadcastable to (N, H, T, S).
    """
    rows, heads, length, d_head = q.shape
    groups, keys = k.size(0), k.size(2)
    if rows % groups:
        raise ValueError(f"{rows} query rows cannot share {groups} key rows: {rows} is not a multiple of {groups}")
    g = rows // groups

    def to_groups(x: Tensor, last: int) -> Tensor:  # (N, h, T, last) -> (M, h, G * T, last)
        x = x.reshape(groups, g, x.size(1), length, last).transpose(1, 2)  # (M, h, G, T, last)
        return x.reshape(groups, x.size(1), g * length, last)

    if mask is not None:
        check_mask(mask, rows, heads, length, keys)
        mask = to_groups(mask.expand(rows, mask.size(1) if mask.dim() == 4 else 1, length, keys), keys)
    out, weights = scaled_dot_product_attention(to_groups(q, d_head), k, v, mask, dropout, need_weights)

    def from_groups(x: Tensor) -> Tensor:  # (M, H, G * T, last) -> (N, H, T, last)
        return x.reshape(groups, heads, g, length, x.size(-1)).transpose(1, 2).reshape(rows, heads, length, x.size(-1))

    return from_groups(out), None if weights is None else from_groups(weights)


@dataclass
class KVCache:
    """Keys and values of one attention layer kept between decoding steps.

    Self-attention appends the new step's keys and values; cross-attention (static=True) computes them
    once from the encoder memory and reuses them at every step. `k` and `v` always hold the valid keys and
    values, (B, H, L, Dh). In eager inference the appended ones live in a preallocated buffer that grows by
    doubling, so `k` and `v` are views of its first L positions and a step writes only its own positions
    (no torch.cat of the whole cache); a cache built from plain tensors, KVCache(k=..., v=...), is copied
    into a buffer at its first append. `reorder` gathers into a second pair of buffers and keeps the old
    pair for the next reorder (fresh memory is slow to touch: allocating it every step cost more than the
    copy on the 2-vCPU VM), so a `k` or `v` taken from a cache stays valid only until its next reorder.
    """

    static: bool = False
    k: Tensor | None = None  # (B, H, L, Dh)
    v: Tensor | None = None  # (B, H, L, Dh)
    _buffers: tuple[Tensor, Tensor] | None = field(default=None, repr=False, compare=False)
    _spare: tuple[Tensor, Tensor] | None = field(default=None, repr=False, compare=False)

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.size(2)

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store this call's keys and values (B, H, t, Dh) and return all the valid ones (B, H, L, Dh).

        A static cache keeps them as they are; otherwise they are appended after the cached positions.
        """
        eager = eager_inference()
        if self.static or (self.k is None and not eager):
            self.k, self.v = k, v
        elif not eager:  # differentiable or traced: plain concatenation
            self.k, self.v = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)
        else:
            length, new = self.length, k.size(2)
            k_buffer, v_buffer = self._writable_buffers(k, length + new)
            k_buffer[:, :, length : length + new].copy_(k)
            v_buffer[:, :, length : length + new].copy_(v)
            self.k, self.v = k_buffer[:, :, : length + new], v_buffer[:, :, : length + new]  # (B, H, L, Dh)
        return self.k, self.v

    def _writable_buffers(self, k: Tensor, needed: int) -> tuple[Tensor, Tensor]:
        """Buffers whose first `length` positions hold self.k, self.v, with room for `needed` positions."""
        buffers = self._buffers
        if buffers is not None and self.k is not None:
            holds_cache = _is_prefix(self.k, buffers[0]) and _is_prefix(self.v, buffers[1])
            if holds_cache and buffers[0].size(2) >= needed and buffers[0].dtype == k.dtype:
                return buffers
        batch, heads, _, d_head = k.shape
        capacity = max(64, 1 << (needed - 1).bit_length())  # a power of two: few regrowths
        k_buffer = k.new_empty(batch, heads, capacity, d_head)
        v_buffer = k.new_empty(batch, heads, capacity, d_head)
        if self.k is not None and self.length:
            k_buffer[:, :, : self.length].copy_(self.k)
            v_buffer[:, :, : self.length].copy_(self.v)
        self._buffers, self._spare = (k_buffer, v_buffer), None
        return self._buffers

    def reorder(self, index: Tensor) -> KVCache:
        """Keep batch rows `index` (beam reselection, or expanding B sources to B*K beams)."""
        if self.k is None:
            return self
        buffers = self._buffers
        if self.static or buffers is None or not eager_inference() or not _is_prefix(self.k, buffers[0]):
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)
            self._buffers = self._spare = None
            return self
        rows = self.k.size(0)
        if index.numel() == rows and index.device.type == "cpu":  # (on a GPU, nonzero() would sync every step)
            # Beam reselection: rows whose parent is themselves stay where they are; copy only the others
            # (gathered first, so no row is overwritten before it is read). Most beams keep their parent.
            moved = (index != torch.arange(rows, device=index.device)).nonzero().view(-1)  # (m,)
            if moved.numel() <= rows // 2:
                if moved.numel():
                    parents = index.index_select(0, moved)
                    for valid in (self.k, self.v):
                        valid.index_copy_(0, moved, valid.index_select(0, parents))
                return self
        # Gather the valid positions of the kept rows into the spare buffers (same shape) or fresh ones.
        length, shape = self.length, (index.numel(), *buffers[0].shape[1:])
        spare = self._spare
        if spare is None or spare[0].shape != shape:
            spare = (buffers[0].new_empty(shape), buffers[1].new_empty(shape))
        for target, valid in zip(spare, (self.k, self.v), strict=True):
            torch.index_select(valid, 0, index, out=target[:, :, :length])
        self._buffers, self._spare = spare, buffers
        self.k, self.v = spare[0][:, :, :length], spare[1][:, :, :length]
        return self


def _is_prefix(view: Tensor, buffer: Tensor) -> bool:
    """Whether `view` is buffer[:, :, :L] (so appending may write buffer[:, :, L:])."""
    return view.data_ptr() == buffer.data_ptr() and view.stride() == buffer.stride()


def _tracing() -> bool:
    """Inside torch.compile, torch.export (the ONNX exporter) or torch.jit tracing."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def eager_inference() -> bool:
    """No autograd and no tracer: the case the inference shortcuts (weight copies, cache buffers) serve."""
    return not torch.is_grad_enabled() and not _tracing()


_fixed_weights_epoch: int | None = None  # set while a `fixed_weights()` block runs
_epochs = itertools.count()


@contextlib.contextmanager
def fixed_weights() -> Iterator[None]:
    """Declare that no parameter changes inside the block (a decoding call does this).

    The inference copies of `inference_weights` are then checked against their parameters once per block
    instead of at every use. Nested blocks share the outer one's check.
    """
    global _fixed_weights_epoch
    outer = _fixed_weights_epoch
    if outer is None:
        _fixed_weights_epoch = next(_epochs)
    try:
        yield
    finally:
        _fixed_weights_epoch = outer


def inference_weights(owner: nn.Module, group: str, names: tuple[str, ...]) -> tuple[Tensor, Tensor | None] | None:
    """The weights of owner's linear submodules `names`, for inference: concatenated along the outputs and
    transposed to (in, out); None when one of them is not a plain nn.Linear (quantized, wrapped, hooked).

    One product then replaces two or three (fewer calls per decoding step), and the (in, out) layout
    multiplies a few rows faster than F.linear's (out, in) one: up to 2.5x for one row with the weight in
    cache, ~1.2x for 128 rows (MKL on the 2-vCPU VM, docs/PERFORMANCE.md). The copy lives on `owner` (not
    in its state_dict) under the key `group` and is
    rebuilt whenever a source parameter changes: it is keyed by each parameter's identity, storage, version
    counter (bumped by optimizer steps and load_state_dict) and dtype. Inside `fixed_weights()` that check
    runs once per block.
    """
    copies = owner.__dict__.setdefault("_inference_weights", {})
    entry = copies.get(group)
    if entry is not None and entry[0] is not None and entry[0] == _fixed_weights_epoch:
        return entry[2]
    linears = [owner._modules[name] for name in names]
    if not all(_plain_linear(m) for m in linears):
        copies[group] = (_fixed_weights_epoch, None, None)
        return None
    params = [p for m in linears for p in (m.weight, m.bias) if p is not None]
    key = tuple((id(p), p.data_ptr(), p._version, p.dtype) for p in params)
    if entry is None or entry[1] != key:
        weight = torch.cat([m.weight for m in linears]).t().contiguous()  # (in, out)
        biases = [m.bias for m in linears]
        bias = None if any(b is None for b in biases) else torch.cat(biases)  # (out,)
        entry = (None, key, (weight, bias))
    copies[group] = (_fixed_weights_epoch, entry[1], entry[2])
    return entry[2]


def _plain_linear(module: nn.Module) -> bool:
    """A plain nn.Linear without hooks, whose weights may be used directly."""
    return type(module) is nn.Linear and not module._forward_hooks and not module._forward_pre_hooks


def skip_full_mask(mask: Tensor | None) -> Tensor | None:
    """None in place of a mask that lets every query see every key (no padding), which spares each layer
    the masking work. Only checked in eager inference on the CPU, where reading the answer back is cheap;
    elsewhere (a GPU sync, a data-dependent branch under a tracer) the mask is kept as it is."""
    if mask is None or mask.device.type != "cpu" or not eager_inference():
        return mask
    return None if bool(mask.all()) else mask


def linear_t(x: Tensor, weight_t: Tensor, bias: Tensor | None) -> Tensor:
    """x @ weight_t + bias for x (..., in) and weight_t (in, out): one addmm on the flattened rows."""
    rows = x.reshape(-1, x.size(-1))
    out = torch.mm(rows, weight_t) if bias is None else torch.addmm(bias, rows, weight_t)
    return out.view(*x.shape[:-1], weight_t.size(1))


_GROUPS = {"q": ("q_proj",), "kv": ("k_proj", "v_proj"), "qkv": ("q_proj", "k_proj", "v_proj"), "out": ("out_proj",)}


class MultiHeadAttention(nn.Module):
    """Multi-head attention (section 3.2.2): H scaled dot-product heads over learned projections of Q, K, V.

    The parameters are the four projections q_proj, k_proj, v_proj, out_proj (the names checkpoints and the
    torch.nn / Hugging Face mappings use). At compute time the projections that read the same input run as
    one matrix product: Q, K and V in self-attention, K and V of the memory in cross-attention.
    """

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
        if cache is not None and cache.static and cache.k is not None:
            (q,) = self._project(query, "q")  # (B, H, T, Dh)
            k, v = cache.k, cache.v  # computed from the memory at the first step
        else:
            if key_value is None:
                q, k, v = self._project(query, "qkv")  # (B, H, T, Dh) each
            else:
                (q,) = self._project(query, "q")  # (B, H, T, Dh)
                k, v = self._project(key_value, "kv")  # (B, H, S, Dh) each
            if cache is not None:
                k, v = cache.update(k, v)  # (B, H, S, Dh) each, the cached positions included
        dropout = self.dropout if self.training else 0.0
        if k.size(0) == q.size(0):
            out, weights = scaled_dot_product_attention(q, k, v, mask, dropout, need_weights)
        else:  # a static cache with one row per example, for the example's beams (see grouped_attention)
            out, weights = grouped_attention(q, k, v, mask, dropout, need_weights)
        out = out.transpose(1, 2).reshape(out.size(0), out.size(2), self.d_model)  # (B, T, D)
        packed = inference_weights(self, "out", _GROUPS["out"]) if eager_inference() else None
        out = self.out_proj(out) if packed is None else linear_t(out, *packed)
        return out, weights  # (B, T, D), (B, H, T, S) | None

    def _project(self, x: Tensor, which: str) -> tuple[Tensor, ...]:
        """The projections `which` ("q", "kv" or "qkv") of x (B, L, D), split into heads: (B, H, L, Dh) each."""
        names = _GROUPS[which]
        packed = inference_weights(self, which, names) if eager_inference() else None
        if packed is not None:
            y = linear_t(x, *packed)  # (B, L, n * D)
        else:
            linears = [self._modules[name] for name in names]
            if len(linears) > 1 and all(_plain_linear(m) for m in linears):
                # One product for the projections of one input, still differentiable per parameter.
                biases = [m.bias for m in linears]
                bias = None if any(b is None for b in biases) else torch.cat(biases)
                y = F.linear(x, torch.cat([m.weight for m in linears]), bias)  # (B, L, n * D)
            else:
                y = torch.cat([m(x) for m in linears], dim=-1) if len(linears) > 1 else linears[0](x)
        if y.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            y = y.float()  # one cast for Q, K and V: attention runs in fp32 under CPU autocast (see
            # scaled_dot_product_attention)
        batch, length = x.shape[:2]
        heads = y.view(batch, length, len(names), self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        return heads.unbind(0)  # (B, H, L, Dh) each


def _divisors_hint(n: int) -> str:
    return ", ".join(str(d) for d in range(1, min(n, 64) + 1) if n % d == 0)
