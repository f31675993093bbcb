"""Sampling from a decoder-only model (GPT): temperature, top-k and nucleus (top-p), one token at a time with
the key/value cache.

The model protocol here is the decoder-only one:

    model.decode_step(tokens (B, t), cache) -> (logits (B, t, V), cache)   (cache=None: a fresh one)

`sample` is a generator: it yields each step's new tokens as they come, so a caller can stream them.
Shapes: N samples drawn at once, P prompt length, V vocab.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from transformer.decoding.protocol import banned_index, check_vocab, inference, mask_banned_
from transformer.devices import model_device


class DecoderOnlyModel(Protocol):
    def decode_step(self, tokens: Tensor, cache: Any = None) -> tuple[Tensor, Any]: ...


def check_sampling(temperature: float, top_k: int | None, top_p: float | None, max_new_tokens: int,
                   num_samples: int = 1) -> None:
    """Raise a ValueError naming the first invalid setting and its valid range."""
    if not (isinstance(temperature, (int, float)) and temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature={temperature} must be a finite number > 0 (1 samples the model's own "
                         "distribution; lower is more conservative; use --top-k 1 for the most probable token)")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k={top_k} must be an integer >= 1 (or unset for no top-k cut)")
    if top_p is not None and not (0 < top_p <= 1):
        raise ValueError(f"top_p={top_p} must be in (0, 1] (1 keeps every token)")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be an integer >= 1")
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples={num_samples} must be an integer >= 1")


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """`logits` (..., V) with every token outside the k most probable at -inf (tokens tied with the k-th
    are kept)."""
    if k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """`logits` (..., V) keeping the nucleus: the most probable tokens whose probabilities first sum to at
    least `p` (Holtzman et al., 2020); the others at -inf. The most probable token is always kept."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (..., V)
    probs = torch.softmax(sorted_logits.float(), dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # probability mass of the tokens ranked above each one
    drop_sorted = before >= p  # the tokens after the nucleus is complete
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def next_token_distribution(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                            top_p: float | None = None) -> Tensor:
    """Probabilities (N, V) to draw the next token from, given the last position's logits (N, V)."""
    logits = logits.float() / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return torch.softmax(logits, dim=-1)


def sample(
    model: DecoderOnlyModel,
    prompt: Sequence[int],
    *,
    eos_id: int,
    pad_id: int,
    bos_id: int,
    vocab_size: int,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    max_positions: int | None = None,
) -> Iterator[Tensor]:
    """Yield the new tokens (N,) of each step, N = `num_samples` continuations of `prompt` (its ids, <bos>
    first), until every sample has produced <eos> or `max_new_tokens` steps are done. A sample that has
    finished yields `pad_id` afterwards. PAD and BOS are never drawn. `max_positions` (a learned position
    table's size) bounds prompt + new tokens; `generator` makes the draws reproducible."""
    check_sampling(temperature, top_k, top_p, max_new_tokens, num_samples)
    check_vocab(vocab_size, pad_id, bos_id, eos_id)
    if not prompt:
        raise ValueError("the prompt has no tokens; it needs at least <bos>")
    if max_positions is not None and len(prompt) + max_new_tokens > max_positions:
        raise ValueError(
            f"a prompt of {len(prompt)} tokens plus max_new_tokens={max_new_tokens} exceeds the model's "
            f"{max_positions} learned positions; shorten the prompt or use max_new_tokens <= "
            f"{max(max_positions - len(prompt), 0)}")
    with inference(model):
        device = model_device(model)
        tokens = torch.tensor([list(prompt)] * num_samples, dtype=torch.long, device=device)  # (N, P)
        banned = banned_index(pad_id, bos_id, eos_id, tokens.device)
        finished = torch.zeros(num_samples, dtype=torch.bool, device=device)
        cache = None
        for _ in range(max_new_tokens):
            logits, cache = model.decode_step(tokens, cache)  # (N, t, V)
            logits = mask_banned_(logits[:, -1], banned)  # (N, V)
            probs = next_token_distribution(logits, temperature, top_k, top_p)
            if generator is not None:  # draws on the generator's device (the CPU's: the same on any device)
                probs = probs.to(generator.device)
            new = torch.multinomial(probs, 1, generator=generator).view(-1).to(device)  # (N,)
            new = new.masked_fill(finished, pad_id)
            yield new
            finished |= new == eos_id
            if bool(finished.all()):
                return
            tokens = new.view(-1, 1)  # (N, 1): the cache holds the earlier positions
