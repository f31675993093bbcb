"""Keys and values kept between decoding steps: one KVCache per attention layer, a DecoderCache per decoder
(self- and cross-attention), a StackCache per decoder-only stack (self-attention alone).

Lifecycle (as torchtune's setup_cache / reset_cache): `DecoderCache.setup(n_layers, buffered=...)` makes
the empty caches of a decoder; the first decoding step fills them, each later step appends its own position
to the self-attention caches, `reorder` keeps the rows a search continues with, and `reset()` empties them
for the next search. Beam search calls `set_beam_size(K)` once after its first step: the cross-attention
keys and values then stay one row per example, read by the example's K beams (`grouped_attention`).

Buffered caches (`buffered=True`, for decoding without autograd) append into a preallocated buffer that
doubles when full, so a step writes only its own positions instead of a torch.cat of the whole cache, and
`reorder` copies only the rows whose parent changed. Unbuffered caches concatenate: differentiable code and
traced graphs (the ONNX export) use them. Figures in docs/PERFORMANCE.md.

Shapes: B rows (examples or beams), H heads, L cached positions, t new positions, Dh head dim.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class KVCache:
    """Keys and values of one attention layer.

    Self-attention appends the new step's keys and values; cross-attention (static=True) computes them
    once from the encoder memory and reuses them at every step. `k` and `v` always hold the valid keys and
    values, (B, H, L, Dh). A static cache with `beams` = K > 1 holds one row per example for K query rows.
    In a buffered cache `k` and `v` are views of the first L positions of a buffer; `reorder` gathers into a
    second pair of buffers and keeps the old pair for the next reorder (fresh memory is slow to touch:
    allocating it every step cost more than the copy), so a `k` or `v` taken from a buffered cache stays
    valid only until its next reorder. A cache built from tensors, KVCache(k=..., v=...), is copied into a
    buffer at its first append.
    """

    static: bool = False
    buffered: bool = False
    beams: int = 1
    k: Tensor | None = None  # (B, H, L, Dh)
    v: Tensor | None = None  # (B, H, L, Dh)
    _buffers: tuple[Tensor, Tensor] | None = field(default=None, repr=False, compare=False)
    _spare: tuple[Tensor, Tensor] | None = field(default=None, repr=False, compare=False)

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.size(2)

    def reset(self) -> None:
        """Empty the cache for a new search (`static` and `buffered` stay; `beams` is back to 1)."""
        self.k = self.v = None
        self._buffers = self._spare = None
        self.beams = 1

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store this call's keys and values (B, H, t, Dh) and return all the valid ones (B, H, L, Dh).

        A static cache keeps them as they are; otherwise they are appended after the cached positions.
        """
        if self.static or self.k is None and not self.buffered:
            self.k, self.v = k, v
        elif not self.buffered:
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
        """Keep batch rows `index` (N,): beam reselection, finished rows dropped, or B sources made B*K beams."""
        if self.k is None:
            return self
        buffers = self._buffers
        if self.static or not self.buffered or buffers is None or not _is_prefix(self.k, buffers[0]):
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)
            self._buffers = self._spare = None
            return self
        if self._reorder_moved_rows(index):
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

    def _reorder_moved_rows(self, index: Tensor) -> bool:
        """Beam reselection in place when at most half the rows change parent: rows whose parent is
        themselves stay where they are and only the others are copied (gathered first, so no row is
        overwritten before it is read). Most beams keep their parent. False when this does not apply."""
        rows = self.k.size(0)
        if index.numel() != rows or index.device.type != "cpu":  # (on a GPU, nonzero() would sync every step)
            return False
        moved = (index != torch.arange(rows, device=index.device)).nonzero().view(-1)  # (m,)
        if moved.numel() > rows // 2:
            return False
        if moved.numel():
            parents = index.index_select(0, moved)
            for valid in (self.k, self.v):
                valid.index_copy_(0, moved, valid.index_select(0, parents))
        return True


def _is_prefix(view: Tensor, buffer: Tensor) -> bool:
    """Whether `view` is buffer[:, :, :L] (so appending may write buffer[:, :, L:])."""
    return view.data_ptr() == buffer.data_ptr() and view.stride() == buffer.stride()


@dataclass
class DecoderCache:
    """Per-layer (self-attention, cross-attention) caches of a decoder, for incremental decoding."""

    layers: list[tuple[KVCache, KVCache]] = field(default_factory=list)

    @classmethod
    def setup(cls, n_layers: int, buffered: bool = False) -> DecoderCache:
        """Empty caches for a decoder of `n_layers` layers (buffered: see the module docstring)."""
        return cls([(KVCache(buffered=buffered), KVCache(static=True)) for _ in range(n_layers)])

    def reset(self) -> DecoderCache:
        for self_cache, cross_cache in self.layers:
            self_cache.reset()
            cross_cache.reset()
        return self

    @property
    def length(self) -> int:
        """How many target positions are already cached."""
        return self.layers[0][0].length if self.layers else 0

    def reorder(self, index: Tensor) -> DecoderCache:
        """Keep rows `index` of every cache (one row per example, or per beam when the beam size is 1)."""
        for self_cache, cross_cache in self.layers:
            self_cache.reorder(index)
            cross_cache.reorder(index)
        return self

    def set_beam_size(self, beam_size: int) -> DecoderCache:
        """After a first step on B examples: the self-attention caches become B*K rows (the K beams of an
        example consecutive, copies of its row), and the cross-attention caches stay one row per example,
        which its K beams share (see `grouped_attention`)."""
        if not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(f"beam_size={beam_size!r} must be an integer >= 1")
        for self_cache, cross_cache in self.layers:
            if self_cache.k is not None:
                rows = torch.arange(self_cache.k.size(0), device=self_cache.k.device)
                self_cache.reorder(rows.repeat_interleave(beam_size))  # (B*K,)
            cross_cache.beams = beam_size
        return self

    def reorder_beams(self, parents: Tensor, kept: Tensor | None = None) -> DecoderCache:
        """Beam search's reorder after `set_beam_size`: the self-attention caches take rows `parents` (each a
        beam of the same example); the cross-attention caches keep the examples `kept` when some finish
        (None: all) and are not copied otherwise."""
        for self_cache, cross_cache in self.layers:
            self_cache.reorder(parents)
            if kept is not None:
                cross_cache.reorder(kept)
        return self


@dataclass
class StackCache:
    """Per-layer self-attention caches of one stack under a causal mask (a decoder-only model)."""

    layers: list[KVCache] = field(default_factory=list)

    @classmethod
    def setup(cls, n_layers: int, buffered: bool = False) -> StackCache:
        """Empty caches for a stack of `n_layers` layers (buffered: see the module docstring)."""
        return cls([KVCache(buffered=buffered) for _ in range(n_layers)])

    def reset(self) -> StackCache:
        for cache in self.layers:
            cache.reset()
        return self

    @property
    def length(self) -> int:
        """How many positions are already cached."""
        return self.layers[0].length if self.layers else 0

    def reorder(self, index: Tensor) -> StackCache:
        """Keep rows `index` of every cache."""
        for cache in self.layers:
            cache.reorder(index)
        return self
