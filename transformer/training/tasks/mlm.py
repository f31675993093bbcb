"""Masked language modelling (an encoder-only model, BERT's pretraining): 15% of the tokens of each segment are
chosen, 80% of those replaced by <mask>, 10% by a random token, 10% left as they are, and the model predicts
the originals; valid perplexity over the chosen tokens, under a fixed masking.

A segment is <bos> (BERT's [CLS]) + its tokens + <eos> ([SEP]); batches group segments of similar length under
the token budget, as the lm task's. The masking of a batch depends only on (seed, epoch, batch number), so a
resumed run masks as the uninterrupted one did.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from torch import Tensor, nn

from transformer.data.batching import SegmentBatch
from transformer.evaluation.nll import mask_segments, masked_nll
from transformer.training.loss import masked_token_loss
from transformer.training.tasks.lm import LanguageModelTask


class MaskedLanguageModelTask(LanguageModelTask):
    """The lm task's segments and batches, masked; the loss and perplexity over the masked tokens."""

    masked = True

    def batches(self, epoch: int, start: int) -> Iterator[SegmentBatch]:
        self.sampler.set_epoch(epoch)
        seed = self.config.train.seed
        for number, indices in enumerate(itertools.islice(self.sampler, start, None), start):
            yield mask_segments([self.segments[i] for i in indices], self.tokenizer,
                                (seed * 1_000_003 + epoch) * 100_003 + number)

    def loss(self, model: nn.Module, batch: SegmentBatch) -> Tensor:
        loss_sum, _ = masked_token_loss(model, batch.inputs, batch.targets, self.tokenizer.pad_id,
                                        self.config.train.label_smoothing, summed=True)
        return loss_sum

    def batch_tokens(self, batch: SegmentBatch) -> int:
        return int((batch.inputs != self.tokenizer.pad_id).sum())

    def _valid_nll(self, model: nn.Module) -> float:
        return masked_nll(model, self.valid_segments, self.tokenizer, self.config.train.max_tokens)
