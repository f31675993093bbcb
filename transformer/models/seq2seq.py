"""The encoder-decoder Transformer of Figure 1.

Shapes: B batch, S source length, T target length, D d_model, V target vocab.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from transformer.nn.attention_kernels import skip_full_mask
from transformer.nn.kv_cache import DecoderCache
from transformer.nn.layers import Decoder, Encoder
from transformer.nn.masks import causal_mask, padding_mask
from transformer.nn.packed import Packable
from transformer.nn.positional import InputEmbedding, LearnedPositionalEmbedding


class EncoderDecoder(Packable):
    """Embeddings -> encoder -> decoder (with cross-attention) -> linear projection to target logits.

    `encode` and `decode_step` are the protocol the decoding algorithms use; `forward` is teacher-forced
    training on whole target prefixes in parallel.
    """

    PACKS = {"output": ("output_proj",)}  # the (in, out) layout for decoding (packed.py)

    def __init__(
        self,
        src_embed: InputEmbedding,
        tgt_embed: InputEmbedding,
        encoder: Encoder,
        decoder: Decoder,
        output_proj: nn.Linear,
        pad_id: int = 0,
        output_scale: float = 1.0,
    ):
        super().__init__()
        self.src_embed, self.tgt_embed = src_embed, tgt_embed
        self.encoder, self.decoder = encoder, decoder
        self.output_proj = output_proj
        self.pad_id = pad_id
        self.output_scale = output_scale  # T5 (tied): the decoder output times d_model**-0.5 before projecting

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
        if self.output_scale != 1.0:
            x = x * self.output_scale
        output_proj = self.packed("output") or self.output_proj
        return output_proj(x)  # (B, T, V)

    def decode_step(
        self, tokens: Tensor, memory: Tensor, src_mask: Tensor | None, cache: DecoderCache | None = None
    ) -> tuple[Tensor, DecoderCache]:
        """Incremental decoding: with cache=None, a new cache is filled from all `tokens` (buffered in
        inference mode, see kv_cache.py)."""
        if cache is None:
            cache = DecoderCache.setup(len(self.decoder.layers), buffered=torch.is_inference_mode_enabled())
        return self.decode(tokens, memory, src_mask, cache), cache  # (B, t, V)

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        """Teacher forcing: src (B, S), tgt (B, T) shifted right (starts with BOS) -> logits (B, T, V)."""
        return self.output_proj(self.decoder_states(src, tgt))  # (B, T, V)

    def decoder_states(self, src: Tensor, tgt: Tensor) -> Tensor:
        """Teacher forcing up to the decoder's output, before the projection to the vocabulary: (B, T, D).

        A loss that never materializes the (B, T, V) logits (training/loss.py) starts from these."""
        src_mask = padding_mask(src, self.pad_id)  # (B, 1, 1, S)
        memory = self.encode(src, src_mask)  # (B, S, D)
        x = self.tgt_embed(tgt)  # (B, T, D)
        self_mask = causal_mask(tgt.size(1), tgt.size(1), device=tgt.device)  # (1, 1, T, T)
        x = self.decoder(x, memory, self_mask, src_mask)  # (B, T, D)
        return x if self.output_scale == 1.0 else x * self.output_scale

    @property
    def max_positions(self) -> int | None:
        """The longest target the decoder's positions allow (BOS included): a learned table's size, None for
        sinusoids. Decoding (decoding/protocol.py::length_limits) keeps its outputs within it."""
        positions = self.tgt_embed.positions
        return positions.max_len if isinstance(positions, LearnedPositionalEmbedding) else None

    def num_parameters(self) -> int:
        """Parameters counted once, even when embeddings and output projection share a tensor."""
        return sum(p.numel() for p in self.parameters())
