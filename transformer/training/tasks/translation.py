"""Translation (the paper's task): token-budget batches of sentence pairs, label-smoothed loss, valid BLEU."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from transformer.config import RunConfig
from transformer.data.batching import Batch, Pair, TokenBatchSampler, batches, encode_corpus
from transformer.data.datasets import load_split
from transformer.data.prepared import PreparedCorpus
from transformer.data.tokenizer import TOKENIZER_FILE, Tokenizer
from transformer.devices import model_device, move_to
from transformer.evaluation.metrics import corpus_bleu
from transformer.inference import translate
from transformer.training.loss import teacher_forced_loss
from transformer.training.tasks.base import Task


class TranslationTask(Task):
    metric, higher_is_better = "bleu", True

    def __init__(self, config: RunConfig, out: Path, resume: bool):
        super().__init__(config, out, resume)
        data = config.data
        self.pairs: Sequence[Pair]
        if data.corpus == "prepared":  # token ids in memmaps (data/prepared.py): the same pairs, never all in RAM
            cache = PreparedCorpus(data.prepared, data)
            self.valid_data = load_split(data, "valid")
            self.tokenizer = self._prepared_tokenizer(cache)
            self.pairs = prepared = cache.pairs(data.max_len)
            lengths = prepared.lengths()
        else:
            self.train_data = load_split(data, "train")
            self.valid_data = load_split(data, "valid")
            self.tokenizer = self._tokenizer(self.train_data.src + self.train_data.tgt)
            self.pairs = encode_corpus(self.train_data, self.tokenizer, data.max_len)
            lengths = [(len(s), len(t)) for s, t in self.pairs]  # TokenBatchSampler.from_pairs
        self.config = self._resolve(self.tokenizer)
        self.valid_pairs = None if self.valid_data is None else encode_corpus(self.valid_data, self.tokenizer,
                                                                             data.max_len)
        t = config.train
        self.sampler = TokenBatchSampler(lengths, t.max_tokens, shuffle=True, seed=t.seed)

    def _prepared_tokenizer(self, cache: PreparedCorpus) -> Tokenizer:
        """The cache's tokenizer, copied into the run (when resuming, the run's, checked to be the cache's)."""
        if self.config.train.init_from:
            raise ValueError(f"train.init_from={self.config.train.init_from!r} with data.corpus='prepared': the "
                             "cache holds ids of its own tokenizer; fine-tune on the text corpus instead")
        path = self.out / TOKENIZER_FILE
        if not self.resume:  # copied whole, then renamed: each process of a torchrun job copies it
            self.out.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{os.getpid()}")
            shutil.copyfile(cache.tokenizer_file, partial)
            os.replace(partial, path)
        cache.check_tokenizer(path)
        return Tokenizer.load(path)

    def _special_ids(self) -> tuple[int, int, int]:
        """(pad_id, bos_id, eos_id) of the tokenizer, in the order `batches` and `collate` take them."""
        tok = self.tokenizer
        return tok.pad_id, tok.bos_id, tok.eos_id

    def n_batches(self, epoch: int) -> int:
        self.sampler.set_epoch(epoch)
        return len(self.sampler)

    def batches(self, epoch: int, start: int) -> Iterator[Batch]:
        self.sampler.set_epoch(epoch)
        return batches(self.pairs, self.sampler, *self._special_ids(), start=start)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        # Decoder states, then the output projection and the loss fused chunk by chunk: the (B, T, V) logits
        # never exist (docs/PERFORMANCE.md, "Training memory").
        loss_sum, _ = teacher_forced_loss(model, batch.src, batch.tgt_in, batch.tgt_out, self.tokenizer.pad_id,
                                          self.config.train.label_smoothing, summed=True)
        return loss_sum

    def loss_tokens(self, batch: Batch) -> int:
        return batch.n_tgt_tokens

    def batch_tokens(self, batch: Batch) -> int:
        return batch.n_src_tokens + batch.n_tgt_tokens

    @property
    def has_validation(self) -> bool:
        return self.valid_data is not None and len(self.valid_data) > 0

    def validate(self, model: nn.Module) -> dict[str, float]:
        return {"valid_loss": round(self._valid_loss(model), 4), "valid_bleu": round(self.valid_metric(model), 2)}

    @torch.no_grad()
    def _valid_loss(self, model: nn.Module) -> float:
        t = self.config.train
        sampler = TokenBatchSampler.from_pairs(self.valid_pairs, t.max_tokens, shuffle=False)
        total, count = 0.0, 0
        for batch in batches(self.valid_pairs, sampler, *self._special_ids()):
            batch = move_to(batch, model_device(model))
            loss_sum, n = teacher_forced_loss(model, batch.src, batch.tgt_in, batch.tgt_out, self.tokenizer.pad_id,
                                              t.label_smoothing, summed=True)
            total, count = total + float(loss_sum), count + n
        return total / max(count, 1)

    def valid_metric(self, model: nn.Module) -> float:
        """Greedy BLEU on the first train.eval_limit valid pairs."""
        limit = self.config.train.eval_limit
        src, refs = self.valid_data.src[:limit], self.valid_data.tgt[:limit]
        greedy = dataclasses.replace(self.config.decode, beam=1)
        hyps = translate(model, self.tokenizer, src, greedy, self.config.data.max_len)
        return corpus_bleu(hyps, refs).score
