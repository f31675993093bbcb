"""Perplexity of a decoder-only model: exp of the mean negative log-likelihood per predicted token."""

from __future__ import annotations

import torch
from torch import nn

from transformer.data.batching import TokenBatchSampler, batches, collate_segments
from transformer.data.tokenizer import Tokenizer
from transformer.training.loss import next_token_loss


@torch.no_grad()
def mean_nll(model: nn.Module, segments: list[list[int]], tokenizer: Tokenizer, max_tokens: int) -> float:
    """The negative log-likelihood per predicted token (<eos> included) of `segments`; exp of it is the
    perplexity. Every segment is scored from its start, in batches of at most `max_tokens` padded tokens."""
    sampler = TokenBatchSampler.from_segments(segments, max_tokens, shuffle=False)
    total, count = 0.0, 0
    for batch in batches(segments, sampler, tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, 0,
                         collate_segments):
        loss_sum, n = next_token_loss(model, batch.inputs, batch.targets, tokenizer.pad_id, 0.0, summed=True)
        total, count = total + float(loss_sum), count + n
    return total / max(count, 1)
