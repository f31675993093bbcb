"""The model protocol every search in this package uses, and what the searches share: input checks,
length limits, the tokens never produced, the inference context.

Decoding sees a model only through this protocol:

    model.encode(src (B, S), src_mask (B, 1, 1, S)) -> memory (B, S, D)
    model.decode_step(tokens (B, t), memory (B, S, D), src_mask (B, 1, 1, S), cache) -> (logits (B, t, V), cache)
    cache.reorder(index (N,)) -> cache holding rows `index` of the old one
    cache.set_beam_size(K), cache.reorder_beams(parents, kept)   (optional: see beam.py)

With `cache=None`, decode_step computes all t tokens from scratch and returns a fresh cache; with a cache,
`tokens` are only the new tokens and their positions continue after the cached ones.

Length limit: an example may generate at most `max_new_tokens` tokens, EOS included, or, when that is None,
int(max_len_a * source_length + max_len_b) with the source length counted without padding (at least 1).
A decoder with a learned position table (`model.max_positions`, None for sinusoids) bounds both: BOS and every
token fed back take a position, so L tokens need L positions. The formula's limit is cut to the table's size;
a `max_new_tokens` beyond it is an error before any decoding.

Shapes: B batch, S source length, t new target tokens, T prefix length, D d_model, V vocab.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import Tensor

from transformer.special_ids import check_special_ids


class DecodeCache(Protocol):
    def reorder(self, index: Tensor) -> DecodeCache: ...


class Seq2SeqModel(Protocol):
    def encode(self, src: Tensor, src_mask: Tensor) -> Tensor: ...

    def decode_step(
        self, tokens: Tensor, memory: Tensor, src_mask: Tensor, cache: Any
    ) -> tuple[Tensor, DecodeCache]: ...


def check_source(src: Tensor) -> None:
    if src.dim() != 2:
        raise ValueError(f"src must be token ids of shape (B, S), got shape {tuple(src.shape)}")
    if src.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"src must hold integer token ids, got dtype {src.dtype}")


def check_vocab(vocab_size: int, pad_id: int, bos_id: int, eos_id: int) -> None:
    check_special_ids(pad_id, bos_id, eos_id, vocab_size, vocabulary=f"the model's vocabulary of size {vocab_size}")


def length_limits(
    src_mask: Tensor, max_len_a: float, max_len_b: int, max_new_tokens: int | None,
    max_positions: int | None = None,
) -> list[int]:
    """The most tokens (EOS included) each example may generate; `max_positions` is the decoder's learned
    position table size (None: no bound), see the module docstring."""
    if max_new_tokens is not None:
        if max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be positive (or None to use max_len_a/b)")
        if max_positions is not None and max_new_tokens > max_positions:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} exceeds the decoder's {max_positions} learned positions; use "
                f"max_new_tokens <= {max_positions}, or a model with positional='sinusoidal', which has no limit")
        return [max_new_tokens] * src_mask.size(0)
    if not 0 <= max_len_a < float("inf") or max_len_b < 0:
        raise ValueError(f"max_len_a={max_len_a} and max_len_b={max_len_b} must both be finite and >= 0")
    lengths = src_mask.sum(dim=(1, 2, 3)).tolist()  # (B,) tokens without padding
    limits = [max(1, int(max_len_a * n + max_len_b)) for n in lengths]
    return limits if max_positions is None else [min(limit, max_positions) for limit in limits]


def banned_ids(pad_id: int, bos_id: int, eos_id: int) -> list[int]:
    """Tokens decoding never produces: PAD and BOS (unless BOS doubles as EOS)."""
    return sorted({pad_id, bos_id} - {eos_id})


def mask_banned_(logits: Tensor, banned: Tensor) -> Tensor:
    """fp32 `logits` with the banned tokens at -inf, applied before any softmax: in place when the logits are
    fp32 already (a copy otherwise), for the fresh logits of a decoding step, which nothing else reads.
    `banned` is a `banned_index`."""
    return logits.float().index_fill_(-1, banned, float("-inf"))  # (N, V)


def banned_index(pad_id: int, bos_id: int, eos_id: int, device: torch.device) -> Tensor:
    """`banned_ids` as a tensor on `device`, for `mask_banned_`."""
    return torch.tensor(banned_ids(pad_id, bos_id, eos_id), dtype=torch.long, device=device)


def check_min_new_tokens(min_new_tokens: int) -> None:
    if not isinstance(min_new_tokens, int) or min_new_tokens < 0:
        raise ValueError(f"min_new_tokens={min_new_tokens!r} must be an integer >= 0 (0: EOS allowed at once)")


def record_step(
    tokens: list[int], rows: list[int], results: list[list[int]], limits: list[int], step: int, eos_id: int
) -> list[int]:
    """Append each row's new token (EOS excluded) to its example's result; return the rows still decoding:
    those that did not produce EOS and have not reached their example's length limit."""
    keep = []
    for i, token in enumerate(tokens):
        if token != eos_id:
            results[rows[i]].append(token)
            if step + 1 < limits[rows[i]]:
                keep.append(i)
    return keep


@contextlib.contextmanager
def inference(model: Any) -> Iterator[None]:
    """eval() and torch.inference_mode() for the duration; the previous training flag is restored."""
    was_training = getattr(model, "training", None)
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if isinstance(model, torch.nn.Module) and was_training is not None:
            model.train(was_training)


