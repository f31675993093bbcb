"""Attention masks. One polarity everywhere: True = may attend.

Shapes: B batch, H heads, T query length, S key length.
Padding masks are (B, 1, 1, S), causal masks (1, 1, T, S); both broadcast to (B, H, T, S).
"""

from __future__ import annotations

import torch
from torch import Tensor


def padding_mask(tokens: Tensor, pad_id: int) -> Tensor:
    """True where the key is a real token, False where it is padding."""
    if tokens.dim() != 2:
        raise ValueError(f"padding_mask expects token ids of shape (B, S), got {tuple(tokens.shape)}")
    return (tokens != pad_id)[:, None, None, :]  # (B, 1, 1, S)


def causal_mask(query_len: int, key_len: int | None = None, device: torch.device | None = None) -> Tensor:
    """True where query i may see key j, i.e. j is not in its future.

    With fewer queries than keys (incremental decoding with a cache) the queries are the *last*
    query_len positions, so the mask is aligned bottom-right: query i sits at position i + key_len - query_len.
    """
    key_len = query_len if key_len is None else key_len
    if query_len > key_len:
        raise ValueError(f"causal_mask: query_len={query_len} exceeds key_len={key_len}")
    offset = key_len - query_len
    q = torch.arange(query_len, device=device)[:, None] + offset
    k = torch.arange(key_len, device=device)[None, :]
    return (k <= q)[None, None]  # (1, 1, T, S)


def check_mask(mask: Tensor, batch: int, heads: int, query_len: int, key_len: int) -> None:
    """Raise a ValueError naming the problem when a mask is not boolean or does not broadcast."""
    if mask.dtype != torch.bool:
        raise ValueError(
            f"attention mask must be a bool tensor (True = may attend), got dtype {mask.dtype}; "
            "convert with mask.bool() (and invert a torch.nn-style mask where True means 'blocked')"
        )
    target = (batch, heads, query_len, key_len)
    ok = mask.dim() <= 4 and all(m in (1, t) for m, t in zip(mask.shape[::-1], target[::-1], strict=False))
    if not ok:
        raise ValueError(
            f"attention mask of shape {tuple(mask.shape)} does not broadcast to (B, H, T, S) = {target}; "
            "use (B, 1, 1, S) for padding or (1, 1, T, S) for causal masks"
        )
