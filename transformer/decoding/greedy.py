"""Greedy decoding: the most probable next token at every step, over the model protocol of protocol.py.

Shapes: B batch, S source length, t new target tokens, T prefix length, D d_model, V vocab.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from transformer.decoding.beam import Hypothesis
from transformer.decoding.protocol import (
    Seq2SeqModel,
    banned_index,
    check_min_new_tokens,
    check_source,
    check_vocab,
    inference,
    length_limits,
    mask_banned_,
    record_step,
)
from transformer.nn.masks import padding_mask
from transformer.special_ids import check_special_ids

logger = logging.getLogger(__name__)


def greedy_search_scored(model: Seq2SeqModel, src: Tensor, **options: Any) -> list[Hypothesis]:
    """`greedy_search` (the same keyword arguments, the same tokens), with each example's log-probability:
    Hypothesis(tokens, score=log_prob, log_prob), log_prob the sum of the chosen tokens' log-probabilities,
    EOS included when it was produced, each from the log-softmax over the vocabulary without PAD and BOS
    (as `beam_search` scores, which gives the same log_prob at beam 1). `greedy_search` skips this work."""
    log_probs: list[float] = [0.0] * src.size(0)
    results = greedy_search(model, src, **options, log_probs=log_probs)
    return [Hypothesis(tokens, log_prob, log_prob) for tokens, log_prob in zip(results, log_probs, strict=True)]


def greedy_search(
    model: Seq2SeqModel,
    src: Tensor,
    *,
    pad_id: int,
    bos_id: int,
    eos_id: int,
    max_len_a: float = 1.0,
    max_len_b: int = 50,
    max_new_tokens: int | None = None,
    min_new_tokens: int = 0,
    use_cache: bool = True,
    log_probs: list[float] | None = None,
) -> list[list[int]]:
    """Pick the most probable next token until EOS or the length limit; one token list per example.

    The lists exclude BOS and EOS. PAD and BOS are never produced, nor EOS before `min_new_tokens` tokens.
    Rows that are done are dropped from the batch (their cache rows too), and the loop ends when every row
    is done. With `use_cache=False` each step recomputes the whole prefix (slow; for checking that the
    cache equals recomputation). When `log_probs` is a list (one 0.0 per example), each chosen token's
    log-probability is added to its example's entry (`greedy_search_scored`).
    """
    check_special_ids(pad_id, bos_id, eos_id)
    check_min_new_tokens(min_new_tokens)
    check_source(src)
    src = src.long()
    src_mask = padding_mask(src, pad_id)  # (B, 1, 1, S)
    limits = length_limits(src_mask, max_len_a, max_len_b, max_new_tokens,
                           getattr(model, "max_positions", None))  # within a learned position table
    results: list[list[int]] = [[] for _ in range(src.size(0))]
    if src.size(0) == 0:
        return results
    banned = banned_index(pad_id, bos_id, eos_id, src.device)
    with inference(model):
        memory = model.encode(src, src_mask)  # (B, S, D)
        rows = list(range(src.size(0)))  # example behind each row still in the batch
        tokens = torch.full((src.size(0), 1), bos_id, dtype=torch.long, device=src.device)  # (B, 1)
        inputs, cache = tokens, None  # the prefix (B, T), or only its newest token (B, 1) with a cache
        for step in range(max(limits)):
            logits, new_cache = model.decode_step(inputs, memory, src_mask, cache)  # (B, t, V)
            if use_cache:
                cache = new_cache
            if step == 0:
                check_vocab(logits.size(-1), pad_id, bos_id, eos_id)
            scores = mask_banned_(logits[:, -1], banned)  # (B, V)
            log_z = scores.logsumexp(dim=-1) if log_probs is not None else None  # (B,) before EOS is banned
            if step < min_new_tokens:
                scores[:, eos_id] = float("-inf")
            next_tokens = scores.argmax(dim=-1, keepdim=True)  # (B, 1)
            if log_probs is not None:  # log-softmax of the chosen tokens
                for row, value in zip(rows, (scores.gather(1, next_tokens).view(-1) - log_z).tolist(), strict=True):
                    log_probs[row] += value
            keep = record_step(next_tokens.view(-1).tolist(), rows, results, limits, step, eos_id)
            if not keep:
                break
            if cache is None:
                tokens = torch.cat([tokens, next_tokens], dim=1)  # (B, T + 1)
            if len(keep) < len(rows):
                index = torch.tensor(keep, dtype=torch.long, device=src.device)
                next_tokens, memory, src_mask = next_tokens[index], memory[index], src_mask[index]
                tokens = tokens[index] if cache is None else tokens
                cache = cache.reorder(index) if cache is not None else None
                rows = [rows[i] for i in keep]
            inputs = tokens if cache is None else next_tokens
    logger.debug("greedy_search: %d examples, longest output %d tokens",
                 len(results), max(len(r) for r in results))
    return results
