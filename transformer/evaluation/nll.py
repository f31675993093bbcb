"""Perplexity: exp of the mean negative log-likelihood per predicted token, of a decoder-only model (every next
token) or of an encoder-only one (the masked tokens, under a fixed masking)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from transformer.data.batching import SegmentBatch, TokenBatchSampler, batches, collate_segments, pad_ids
from transformer.data.tokenizer import Tokenizer
from transformer.devices import model_device
from transformer.models.encoder_only import mask_for_mlm
from transformer.training.loss import masked_token_loss, next_token_loss

VALID_SEED = 12345  # the fixed masking of held-out text


@torch.no_grad()
def mean_nll(model: nn.Module, segments: list[list[int]], tokenizer: Tokenizer, max_tokens: int) -> float:
    """The negative log-likelihood per predicted token (<eos> included) of `segments`; exp of it is the
    perplexity. Every segment is scored from its start, in batches of at most `max_tokens` padded tokens."""
    sampler = TokenBatchSampler.from_segments(segments, max_tokens, shuffle=False)
    total, count = 0.0, 0
    for batch in batches(segments, sampler, tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, 0,
                         collate_segments):
        device = model_device(model)
        loss_sum, n = next_token_loss(model, batch.inputs.to(device), batch.targets.to(device), tokenizer.pad_id,
                                      0.0, summed=True)
        total, count = total + float(loss_sum), count + n
    return total / max(count, 1)


def mask_segments(segments: Sequence[Sequence[int]], tokenizer: Tokenizer, seed: int) -> SegmentBatch:
    """<bos> + segment + <eos>, padded, masked BERT's way (`mask_for_mlm`, drawn from `seed`): the inputs, and
    as targets the original tokens at the chosen positions, pad elsewhere."""
    tok = tokenizer
    tokens = pad_ids([[tok.bos_id, *s, tok.eos_id] for s in segments], tok.pad_id)  # (B, T)
    inputs, targets = mask_for_mlm(tokens, mask_id=tok.mask_id, vocab_size=tok.vocab_size,
                                   special_ids=[tok.pad_id, tok.bos_id, tok.eos_id, tok.mask_id],
                                   generator=torch.Generator().manual_seed(seed))
    return SegmentBatch(inputs, targets.masked_fill(targets == -100, tok.pad_id), tok.pad_id)


@torch.no_grad()
def masked_nll(model: nn.Module, segments: list[list[int]], tokenizer: Tokenizer, max_tokens: int) -> float:
    """The negative log-likelihood per masked token of `segments`, batch i masked from seed VALID_SEED + i:
    the same masking every time (exp of it is the perplexity)."""
    sampler = TokenBatchSampler.from_segments(segments, max_tokens, shuffle=False)
    total, count = 0.0, 0
    for number, indices in enumerate(sampler):
        batch = mask_segments([segments[i] for i in indices], tokenizer, VALID_SEED + number)
        device = model_device(model)
        loss_sum, n = masked_token_loss(model, batch.inputs.to(device), batch.targets.to(device), batch.pad_id, 0.0,
                                        summed=True)
        total, count = total + float(loss_sum), count + n
    return total / max(count, 1)
