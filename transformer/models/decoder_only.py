"""The decoder-only Transformer (GPT): one stack of the encoder's layers under a causal mask.

Dropping the encoder of Figure 1 leaves a decoder without cross-attention, which is an encoder layer that
may only look back: the same `EncoderLayer`s, given a causal mask instead of a padding mask. Trained to
predict each next token of a text, it generates by sampling one token at a time (decoding/sampling.py),
keeping the keys and values of earlier positions in a StackCache.

Shapes: B batch, T positions (the new ones only when a cache holds the earlier ones), D d_model, V vocab.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from transformer.nn.kv_cache import StackCache
from transformer.nn.layers import Encoder
from transformer.nn.masks import causal_mask
from transformer.nn.packed import Packable
from transformer.nn.positional import InputEmbedding, LearnedPositionalEmbedding


class DecoderOnly(Packable):
    """Embeddings -> N layers of masked self-attention and feed-forward -> linear projection to logits."""

    PACKS = {"output": ("output_proj",)}  # the (in, out) layout for decoding (packed.py)

    def __init__(self, embed: InputEmbedding, stack: Encoder, output_proj: nn.Linear, pad_id: int = 0):
        super().__init__()
        self.embed, self.stack, self.output_proj = embed, stack, output_proj
        self.pad_id = pad_id

    def hidden_states(self, tokens: Tensor, cache: StackCache | None = None, need_weights: bool = False) -> Tensor:
        """tokens (B, T) -> the stack's output (B, T, D), each position seeing itself and those before it.

        Right padding needs no mask of its own: a real position never looks forward to it."""
        offset = 0 if cache is None else cache.length
        length = tokens.size(1)
        # A single new position sees every cached one: no mask (and no mask work in each layer).
        mask = None if length == 1 else causal_mask(length, offset + length, device=tokens.device)  # (1, 1, T, L)
        x = self.embed(tokens, offset)  # (B, T, D)
        return self.stack(x, mask, need_weights, None if cache is None else cache.layers)  # (B, T, D)

    def forward(self, tokens: Tensor) -> Tensor:
        """Next-token logits at every position, all positions in parallel: (B, T) -> (B, T, V)."""
        return self.output_proj(self.hidden_states(tokens))  # (B, T, V)

    def decode_step(self, tokens: Tensor, cache: StackCache | None = None) -> tuple[Tensor, StackCache]:
        """Incremental decoding: the logits (B, t, V) of the new `tokens` (B, t), given the cached positions.
        With cache=None, a new cache is filled from all `tokens` (the prompt)."""
        if cache is None:
            cache = StackCache.setup(len(self.stack.layers), buffered=torch.is_inference_mode_enabled())
        output_proj = self.packed("output") or self.output_proj
        return output_proj(self.hidden_states(tokens, cache)), cache  # (B, t, V)

    @property
    def max_positions(self) -> int | None:
        """The longest sequence the positions allow: a learned table's size, None for sinusoids."""
        positions = self.embed.positions
        return positions.max_len if isinstance(positions, LearnedPositionalEmbedding) else None

    def num_parameters(self) -> int:
        """Parameters counted once, even when the embedding and the output projection share a tensor."""
        return sum(p.numel() for p in self.parameters())
