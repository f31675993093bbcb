"""The encoder-decoder Transformer of Figure 1.

Shapes: B batch, S source length, T target length, D d_model, V target vocab.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from transformer.nn.attention import KVCache, eager_inference, inference_weights, linear_t, skip_full_mask
from transformer.nn.layers import Decoder, Encoder
from transformer.nn.masks import causal_mask, padding_mask
from transformer.nn.positional import InputEmbedding


@dataclass
class DecoderCache:
    """Per-layer (self-attention, cross-attention) caches for incremental decoding."""

    layers: list[tuple[KVCache, KVCache]] = field(default_factory=list)

    @classmethod
    def empty(cls, n_layers: int) -> DecoderCache:
        return cls([(KVCache(), KVCache(static=True)) for _ in range(n_layers)])

    @property
    def length(self) -> int:
        """How many target positions are already cached."""
        return self.layers[0][0].length if self.layers else 0

    def reorder(self, index: Tensor) -> DecoderCache:
        for self_cache, cross_cache in self.layers:
            self_cache.reorder(index)
            cross_cache.reorder(index)
        return self

    def expand_beams(self, index: Tensor) -> DecoderCache:
        """Beam search's expansion of B examples to B*K beams (index = each beam's example, the K beams of
        an example consecutive): the self-attention caches take rows `index`; the cross-attention caches keep
        one row per example, which the example's beams share (see `grouped_attention`)."""
        for self_cache, _ in self.layers:
            self_cache.reorder(index)
        return self

    def reorder_beams(self, parents: Tensor, kept: Tensor | None = None) -> DecoderCache:
        """Beam search's reorder after `expand_beams`: the self-attention caches take rows `parents` (each
        a beam of the same example); the cross-attention caches keep the examples `kept` when some finish
        (None: all) and are not copied otherwise."""
        for self_cache, cross_cache in self.layers:
            self_cache.reorder(parents)
            if kept is not None:
                cross_cache.reorder(kept)
        return self


class EncoderDecoder(nn.Module):
    """Embeddings -> encoder -> decoder (with cross-attention) -> linear projection to target logits.

    `encode` and `decode_step` are the protocol the decoding algorithms use; `forward` is teacher-forced
    training on whole target prefixes in parallel.
    """

    def __init__(
        self,
        src_embed: InputEmbedding,
        tgt_embed: InputEmbedding,
        encoder: Encoder,
        decoder: Decoder,
        output_proj: nn.Linear,
        pad_id: int = 0,
    ):
        super().__init__()
        self.src_embed, self.tgt_embed = src_embed, tgt_embed
        self.encoder, self.decoder = encoder, decoder
        self.output_proj = output_proj
        self.pad_id = pad_id

    def encode(self, src: Tensor, src_mask: Tensor | None = None, need_weights: bool = False) -> Tensor:
        """src: (B, S) ids -> memory (B, S, D)."""
        if src_mask is None:
            src_mask = padding_mask(src, self.pad_id)  # (B, 1, 1, S)
        return self.encoder(self.src_embed(src), src_mask, need_weights)  # (B, S, D)

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        src_mask: Tensor | None,
        cache: DecoderCache | None = None,
        need_weights: bool = False,
    ) -> Tensor:
        """tgt: (B, T) ids (the new ones only when a cache holds the earlier ones) -> logits (B, T, V)."""
        offset = 0 if cache is None else cache.length
        length = tgt.size(1)
        # A single new position sees every cached one: no mask (and no mask work in each layer).
        self_mask = None if length == 1 else causal_mask(length, offset + length, device=tgt.device)  # (1, 1, T, L)
        # Target padding needs no key mask: it is right padding, which a real position never sees.
        x = self.tgt_embed(tgt, offset)  # (B, T, D)
        src_mask = skip_full_mask(src_mask)
        x = self.decoder(x, memory, self_mask, src_mask, None if cache is None else cache.layers, need_weights)
        packed = inference_weights(self, "output", ("output_proj",)) if eager_inference() else None
        return self.output_proj(x) if packed is None else linear_t(x, *packed)  # (B, T, V)

    def decode_step(
        self, tokens: Tensor, memory: Tensor, src_mask: Tensor | None, cache: DecoderCache | None = None
    ) -> tuple[Tensor, DecoderCache]:
        """Incremental decoding: with cache=None, a new cache is filled from all `tokens`."""
        if cache is None:
            cache = DecoderCache.empty(len(self.decoder.layers))
        return self.decode(tokens, memory, src_mask, cache), cache  # (B, t, V)

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        """Teacher forcing: src (B, S), tgt (B, T) shifted right (starts with BOS) -> logits (B, T, V)."""
        src_mask = padding_mask(src, self.pad_id)  # (B, 1, 1, S)
        return self.decode(tgt, self.encode(src, src_mask), src_mask)  # (B, T, V)

    def num_parameters(self) -> int:
        """Parameters counted once, even when embeddings and output projection share a tensor."""
        return sum(p.numel() for p in self.parameters())
