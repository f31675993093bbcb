"""Language modelling (a decoder-only model, GPT): predict each next token of a segment; valid perplexity.

Each segment (a verse, a line of a text file) is one sequence, <bos> + its tokens, trained to predict its
tokens + <eos>; batches group segments of similar length under the token budget, as translation's pairs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from torch import Tensor, nn

from transformer.config import RunConfig
from transformer.data.batching import SegmentBatch, TokenBatchSampler, batches, collate_segments, encode_segments
from transformer.data.datasets import load_texts
from transformer.evaluation.metrics import perplexity
from transformer.evaluation.nll import mean_nll
from transformer.training.loss import next_token_loss
from transformer.training.tasks.base import Task


class LanguageModelTask(Task):
    metric, higher_is_better = "perplexity", False
    masked = False  # whether the tokenizer reserves <mask> (the mlm task, which shares this data handling)

    def __init__(self, config: RunConfig, out: Path, resume: bool):
        super().__init__(config, out, resume)
        data, t = config.data, config.train
        texts = load_texts(data, "train")
        self.tokenizer = self._tokenizer(texts, mask=self.masked)
        if self.masked and self.tokenizer.mask_id is None:
            raise ValueError(f"the tokenizer in {out} has no <mask> token; start a new run for the mlm task")
        self.config = self._resolve(self.tokenizer)
        self.segments = encode_segments(texts, self.tokenizer, data.max_len)
        valid = load_texts(data, "valid")
        self.valid_segments = encode_segments(valid, self.tokenizer, data.max_len) if valid else None
        self.sampler = TokenBatchSampler.from_segments(self.segments, t.max_tokens, shuffle=True, seed=t.seed)

    def n_batches(self, epoch: int) -> int:
        self.sampler.set_epoch(epoch)
        return len(self.sampler)

    def batches(self, epoch: int, start: int) -> Iterator[SegmentBatch]:
        self.sampler.set_epoch(epoch)
        tok = self.tokenizer
        return batches(self.segments, self.sampler, tok.pad_id, tok.bos_id, tok.eos_id, start, collate_segments)

    def loss(self, model: nn.Module, batch: SegmentBatch) -> Tensor:
        loss_sum, _ = next_token_loss(model, batch.inputs, batch.targets, self.tokenizer.pad_id,
                                      self.config.train.label_smoothing, summed=True)
        return loss_sum

    def loss_tokens(self, batch: SegmentBatch) -> int:
        return batch.n_tokens

    def batch_tokens(self, batch: SegmentBatch) -> int:
        return batch.n_tokens

    @property
    def has_validation(self) -> bool:
        return bool(self.valid_segments)

    def validate(self, model: nn.Module) -> dict[str, float]:
        nll = self._valid_nll(model)
        return {"valid_loss": round(nll, 4), "valid_perplexity": round(perplexity(nll), 3)}

    def valid_metric(self, model: nn.Module) -> float:
        return perplexity(self._valid_nll(model))

    def _valid_nll(self, model: nn.Module) -> float:
        return mean_nll(model, self.valid_segments, self.tokenizer, self.config.train.max_tokens)
