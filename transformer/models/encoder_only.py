"""The encoder-only Transformer (BERT, Devlin et al., 2019): the encoder stack of Figure 1 alone, pretrained to
fill in masked tokens, then fine-tuned with a small head.

Token, position and token-type (segment) embeddings are summed and normalized; the stack reads the sequence
with a padding mask only, so every token sees the whole segment. Heads: `mlm_states` + the tied output
projection predict masked tokens (the MLM head: dense, GELU, LayerNorm, then the embedding matrix and a
bias); `pooled` is the [CLS] position's state (or, with pooling="mean", the mean of the non-pad states) through
a dense layer and tanh; `classify` puts a linear layer on it; `sentence_embedding` is the mean, the [CLS] state
or the maximum of the non-pad states (sentence embeddings; `embed_mean` the mean).

Shapes: B batch, T tokens, D d_model, V vocab, K classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformer.nn.layers import Encoder
from transformer.nn.masks import padding_mask
from transformer.nn.positional import InputEmbedding
from transformer.nn.tracing import tracing


def check_token_types(token_types: Tensor, tokens: Tensor, type_vocab_size: int) -> None:
    """Raise a ValueError naming the bad shape, dtype or id of `token_types` before a broadcast or an embedding
    kernel fails on it. Without token-type embeddings (type_vocab_size=0) only type 0, one segment, is valid."""
    if tuple(token_types.shape) != tuple(tokens.shape):
        raise ValueError(f"token_types of shape {tuple(token_types.shape)} must have the shape of the tokens, "
                         f"{tuple(tokens.shape)}: one type id per token")
    if token_types.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"token_types must be an integer tensor, got dtype {token_types.dtype}")
    if tracing() or token_types.numel() == 0:
        return
    low, high = int(token_types.min()), int(token_types.max())
    if low < 0 or high >= max(type_vocab_size, 1):
        bad = low if low < 0 else high
        valid = f"0..{type_vocab_size - 1}" if type_vocab_size else "0 only, as the model has no token-type embeddings"
        raise ValueError(f"token type id {bad} is out of range for model.type_vocab_size={type_vocab_size} (valid: "
                         f"{valid}); pass the segment ids the model was trained with, or none")


class EncoderOnly(nn.Module):
    """Embeddings (+ token types) -> encoder -> MLM head (tied), pooler and an optional classification head."""

    def __init__(self, embed: InputEmbedding, stack: Encoder, output_proj: nn.Linear, d_model: int,
                 type_vocab_size: int = 0, n_classes: int = 0, dropout: float = 0.0, eps: float = 1e-5,
                 pad_id: int = 0, pooling: str = "cls"):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling={pooling!r}: use 'cls' (the first position, BERT's) or 'mean'")
        self.embed, self.stack, self.pad_id, self.pooling = embed, stack, pad_id, pooling
        self.token_types = nn.Embedding(type_vocab_size, d_model) if type_vocab_size else None
        self.mlm_dense, self.mlm_norm = nn.Linear(d_model, d_model), nn.LayerNorm(d_model, eps=eps)
        self.output_proj = output_proj  # (V, D) tied to the token embedding, with a bias
        self.pooler = nn.Linear(d_model, d_model)
        self.head_dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, n_classes) if n_classes else None

    def hidden_states(self, tokens: Tensor, token_types: Tensor | None = None, need_weights: bool = False) -> Tensor:
        """tokens (B, T) -> the encoder's output (B, T, D); pad positions are never attended to."""
        x = self.embed.tokens(tokens) + self.embed.positions(tokens.size(1)).to(self.embed.tokens.weight.dtype)
        if token_types is not None:
            check_token_types(token_types, tokens, 0 if self.token_types is None else self.token_types.num_embeddings)
        if self.token_types is not None:
            x = x + self.token_types(torch.zeros_like(tokens) if token_types is None else token_types)
        if self.embed.norm is not None:
            x = self.embed.norm(x)
        x = self.embed.dropout(x)  # (B, T, D)
        return self.stack(x, padding_mask(tokens, self.pad_id), need_weights)  # (B, T, D)

    def mlm_states(self, tokens: Tensor, token_types: Tensor | None = None) -> Tensor:
        """The MLM head up to the output projection: (B, T, D)."""
        h = self.hidden_states(tokens, token_types)
        return self.mlm_norm(F.gelu(self.mlm_dense(h)))  # (B, T, D)

    def forward(self, tokens: Tensor, token_types: Tensor | None = None) -> Tensor:
        """Masked-token logits at every position: (B, T) -> (B, T, V)."""
        return self.output_proj(self.mlm_states(tokens, token_types))  # (B, T, V)

    def pooled(self, tokens: Tensor, token_types: Tensor | None = None) -> Tensor:
        """The [CLS] (first) position's state, or the mean of the non-pad states, through the pooler: (B, D)."""
        states = self.hidden_states(tokens, token_types)  # (B, T, D)
        summary = states[:, 0] if self.pooling == "cls" else self._mean(states, tokens)  # (B, D)
        return torch.tanh(self.pooler(summary))  # (B, D)

    def classify(self, tokens: Tensor, token_types: Tensor | None = None) -> Tensor:
        """Class logits (B, K) from the pooled state."""
        if self.classifier is None:
            raise ValueError("this model has no classification head; set model.n_classes to fine-tune one")
        return self.classifier(self.head_dropout(self.pooled(tokens, token_types)))  # (B, K)

    def embed_mean(self, tokens: Tensor, normalize: bool = False) -> Tensor:
        """Sentence embeddings (B, D): the mean of the non-pad positions' states, L2-normalized on request."""
        return self.sentence_embedding(tokens, "mean", normalize)

    def sentence_embedding(self, tokens: Tensor, pooling: str = "mean", normalize: bool = False) -> Tensor:
        """Sentence embeddings (B, D) of the non-pad positions' states: their mean, the first ([CLS]) one, or
        each dimension's maximum (model.embed_pooling), L2-normalized on request."""
        states = self.hidden_states(tokens)  # (B, T, D)
        if pooling == "mean":
            vectors = self._mean(states, tokens)
        elif pooling == "cls":
            vectors = states[:, 0]
        elif pooling == "max":
            keep = (tokens != self.pad_id).unsqueeze(-1)  # (B, T, 1)
            vectors = states.masked_fill(~keep, float("-inf")).max(dim=1).values
        else:
            raise ValueError(f"pooling={pooling!r}: use 'mean', 'cls' or 'max'")
        return F.normalize(vectors, dim=-1) if normalize else vectors  # (B, D)

    def _mean(self, states: Tensor, tokens: Tensor) -> Tensor:
        """The mean over the non-pad positions: states (B, T, D) -> (B, D)."""
        keep = (tokens != self.pad_id).unsqueeze(-1).to(states.dtype)  # (B, T, 1)
        return (states * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)  # (B, D)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def mask_for_mlm(tokens: Tensor, *, mask_id: int, vocab_size: int, special_ids: list[int], generator: torch.Generator,
                 rate: float = 0.15) -> tuple[Tensor, Tensor]:
    """BERT's masking: each non-special token is chosen with probability `rate`; a chosen token becomes
    `mask_id` 80% of the time, a random token 10%, and stays itself 10%. Returns (inputs, targets), targets
    holding the original token at chosen positions and -100 (ignored) elsewhere."""
    special = torch.isin(tokens, torch.tensor(special_ids, dtype=tokens.dtype))
    chosen = (torch.rand(tokens.shape, generator=generator) < rate) & ~special
    draw = torch.rand(tokens.shape, generator=generator)
    inputs = tokens.clone()
    inputs[chosen & (draw < 0.8)] = mask_id
    randomized = chosen & (draw >= 0.8) & (draw < 0.9)
    inputs[randomized] = torch.randint(0, vocab_size, tokens.shape, generator=generator)[randomized]
    return inputs, tokens.masked_fill(~chosen, -100)
