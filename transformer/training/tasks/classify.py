"""Text classification: a label for each text from the pooled [CLS] state of an encoder-only model (BERT,
fine-tuned), or from the mean of its token (and n-gram) embeddings (a bag of words or n-grams trained from
scratch: models/bag_of_words.py); cross-entropy; valid accuracy.

The data: TSV files (text TAB label) or the Bible's verses labelled with their book's genre. The classes are
the training data's labels (the Bible: the six genres), recorded as model.labels in config.yaml.
`data.label_fraction` trains on a stratified share of the labelled examples. With `train.init_from`, the run
starts from that model directory's encoder and tokenizer (trainer.py, base.py), with a fresh head.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from transformer.config import BAG_TYPES, RunConfig
from transformer.data.bible_books import GENRES
from transformer.data.datasets import load_labelled
from transformer.evaluation.classification import (
    LabelledBatch,
    encode_labelled,
    evaluate_examples,
    example_sampler,
    labelled_batches,
    stratified_subset,
)
from transformer.training.tasks.base import Task

logger = logging.getLogger(__name__)


def label_names(config: RunConfig, train_labels: list[str]) -> tuple[str, ...]:
    """The classes, in the order of the head's outputs: model.labels when set, else the six genres for the
    Bible, else the training labels sorted."""
    names = config.model.labels or (GENRES if config.data.corpus == "bible" else tuple(sorted(set(train_labels))))
    if len(names) < 2:
        raise ValueError(f"a classifier needs at least 2 labels; the training data has {list(names)}")
    return names


class ClassifyTask(Task):
    metric, higher_is_better = "accuracy", True

    def __init__(self, config: RunConfig, out: Path, resume: bool):
        if config.train.init_from and config.model.type in BAG_TYPES:
            raise ValueError(f"train.init_from={config.train.init_from!r}: model.type={config.model.type!r} is "
                             "trained from scratch (there is no pretrained encoder to fine-tune); remove "
                             "train.init_from, or set model.type=encoder_only to fine-tune a BERT")
        super().__init__(config, out, resume)
        data, t = config.data, config.train
        texts, labels = load_labelled(data, "train")
        names = label_names(config, labels)
        self.tokenizer = self._tokenizer(texts)
        self.config = self._resolve(self.tokenizer)
        self.config = self.config.replace(model=self.config.model.replace(n_classes=len(names), labels=tuple(names)))
        where = data.train_tsv if data.corpus == "tsv" else f"Bible {data.tgt} train books"
        examples = encode_labelled(texts, labels, names, self.tokenizer, data.max_len, where)
        keep = stratified_subset([label for _, label in examples], data.label_fraction, t.seed)
        self.examples = [examples[i] for i in keep]
        logger.info("classify: %d training examples (%.0f%% of %d), %d classes", len(self.examples),
                    100 * data.label_fraction, len(examples), len(names))
        valid = load_labelled(data, "valid")
        self.valid_examples = (encode_labelled(*valid, names, self.tokenizer, data.max_len, "the valid split")
                               if valid else [])
        self.sampler = example_sampler(self.examples, t.max_tokens, shuffle=True, seed=t.seed)

    def n_batches(self, epoch: int) -> int:
        self.sampler.set_epoch(epoch)
        return len(self.sampler)

    def batches(self, epoch: int, start: int) -> Iterator[LabelledBatch]:
        self.sampler.set_epoch(epoch)
        return labelled_batches(self.examples, self.sampler, self.tokenizer, start)

    def loss(self, model: nn.Module, batch: LabelledBatch) -> Tensor:
        logits = model.classify(batch.tokens).float()  # (B, K)
        return F.cross_entropy(logits, batch.labels, reduction="sum", label_smoothing=self.config.train.label_smoothing)

    def loss_tokens(self, batch: LabelledBatch) -> int:
        return len(batch)

    def batch_tokens(self, batch: LabelledBatch) -> int:
        return int((batch.tokens != self.tokenizer.pad_id).sum())

    @property
    def has_validation(self) -> bool:
        return bool(self.valid_examples)

    def validate(self, model: nn.Module) -> dict[str, float]:
        scores = evaluate_examples(model, self.valid_examples, self.tokenizer, self.config.train.max_tokens)
        return {f"valid_{name}": round(value, 4) for name, value in scores.items()}

    def valid_metric(self, model: nn.Module) -> float:
        return evaluate_examples(model, self.valid_examples, self.tokenizer, self.config.train.max_tokens)["accuracy"]
