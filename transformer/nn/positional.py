"""Positional encodings (section 3.5) and the scaled token embedding (section 3.4).

Shapes: B batch, T length, D d_model, V vocab.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from transformer.nn.dropout import Dropout
from transformer.nn.tracing import tracing


def sinusoidal_table(length: int, d_model: int, offset: int = 0, interleaved: bool = True) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/D)), PE(pos, 2i+1) = cos(pos / 10000^(2i/D)).

    interleaved=True puts sin on even and cos on odd dimensions, as in the paper; False puts all sines
    first, then all cosines (the layout Marian checkpoints use). Returns (T, D) in fp32.
    """
    if d_model % 2:
        raise ValueError(f"sinusoidal positional encoding needs an even d_model, got d_model={d_model}")
    position = torch.arange(offset, offset + length, dtype=torch.float64)[:, None]  # (T, 1)
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    angles = position * inv_freq  # (T, D/2)
    if interleaved:
        table = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # (T, D)
    else:
        table = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (T, D)
    return table.float()


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed encoding of section 3.5; defined for any length (the table grows on demand)."""

    def __init__(self, d_model: int, max_len: int = 1024, interleaved: bool = True):
        super().__init__()
        self.d_model, self.interleaved = d_model, interleaved
        self.register_buffer("table", sinusoidal_table(max_len, d_model, interleaved=interleaved), persistent=False)

    def forward(self, length: int, offset: int = 0) -> Tensor:
        """The encodings of positions offset .. offset + length - 1: (T, D)."""
        end = offset + length
        if end > self.table.size(0):
            grown = sinusoidal_table(max(end, 2 * self.table.size(0)), self.d_model, interleaved=self.interleaved)
            self.table = grown.to(self.table.device)
        return self.table[offset:end]  # (T, D)


class LearnedPositionalEmbedding(nn.Module):
    """A learned vector per position, up to max_len positions (the paper's alternative in Table 3 (E)).

    `row_offset` rows precede position 0 in the table and are never read (BART keeps 2 there, so its
    checkpoints' (max_len + 2, D) tables load unchanged).
    """

    def __init__(self, max_len: int, d_model: int, row_offset: int = 0):
        super().__init__()
        if row_offset < 0:
            raise ValueError(f"row_offset={row_offset} must be >= 0")
        self.max_len, self.row_offset = max_len, row_offset
        self.weight = nn.Parameter(torch.empty(row_offset + max_len, d_model))
        nn.init.normal_(self.weight, std=d_model**-0.5)

    def forward(self, length: int, offset: int = 0) -> Tensor:
        end = offset + length
        if end > self.max_len:
            raise ValueError(
                f"sequence of {end} positions exceeds the learned positional table of max_len={self.max_len}; "
                "truncate the input (e.g. data max_len) or use positional='sinusoidal', which has no limit"
            )
        return self.weight[self.row_offset + offset : self.row_offset + end]  # (T, D)


class TokenEmbedding(nn.Module):
    """Token ids -> vectors, multiplied by sqrt(d_model) (section 3.4). Checks ids on the CPU side first."""

    def __init__(self, vocab_size: int, d_model: int, pad_id: int | None = None, scale: bool = True):
        super().__init__()
        self.vocab_size = vocab_size
        self.weight = nn.Parameter(torch.empty(vocab_size, d_model))
        nn.init.normal_(self.weight, std=d_model**-0.5)
        self.pad_id = pad_id
        self.scale = math.sqrt(d_model) if scale else 1.0

    def forward(self, tokens: Tensor) -> Tensor:
        check_token_ids(tokens, self.vocab_size)
        return nn.functional.embedding(tokens, self.weight, self.pad_id) * self.scale  # (B, T, D)


def check_token_ids(tokens: Tensor, vocab_size: int) -> None:
    """Raise a ValueError naming the bad id before an embedding kernel asserts on it."""
    if tokens.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"token ids must be an integer tensor, got dtype {tokens.dtype}")
    if tracing() or tokens.numel() == 0:
        return  # an exported graph cannot raise: its caller checks the ids (transformer.interop.onnx does)
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(
            f"token id {bad} is out of range for a vocabulary of size {vocab_size} (valid ids: 0..{vocab_size - 1}); "
            "check that the tokenizer matches the model, or raise the model's vocab size"
        )


class InputEmbedding(nn.Module):
    """Scaled token embedding + positional encoding, then dropout (section 5.4): (B, T) ids -> (B, T, D).

    An optional LayerNorm between the sum and the dropout is BART's `layernorm_embedding`. positions=None: no
    positions are added (T5, whose attention adds relative positions instead: relative_position.py).
    """

    def __init__(self, tokens: TokenEmbedding, positions: nn.Module | None, dropout: float = 0.0,
                 norm: nn.LayerNorm | None = None):
        super().__init__()
        self.tokens, self.positions = tokens, positions
        self.norm = norm
        self.dropout = Dropout(dropout)  # nn.Dropout with a cheaper CPU mask

    def forward(self, ids: Tensor, offset: int = 0) -> Tensor:
        x = self.tokens(ids)  # (B, T, D)
        if self.positions is not None:
            x = x + self.positions(ids.size(1), offset).to(x.dtype)  # (B, T, D)
        if self.norm is not None:
            x = self.norm(x)  # (B, T, D)
        return self.dropout(x)
