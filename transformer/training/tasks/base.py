"""What one kind of training supplies to the loop of trainer.py: its data as batches, its loss, its
validation metric. Everything else (budget, optimizer and learning rate, bf16, clipping and accumulation,
checkpoints, exact resume, progress and metrics.jsonl) the loop does once for every task.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor, nn

from transformer.config import RunConfig
from transformer.data.tokenizer import Tokenizer, train_bpe
from transformer.model_dir import TOKENIZER_FILE
from transformer.models import build_model

logger = logging.getLogger(__name__)


class Task(ABC):
    """Data -> batches, the loss of a batch, and the validation metric, for one `task:` of the config.

    Subclasses load their data and tokenizer in __init__ (the loop seeds the RNGs before), and set
    `self.config` to the run's config resolved against the tokenizer (vocabulary size, special ids).
    """

    metric: ClassVar[str]  # the validation metric, logged as valid_<metric>: "bleu", "perplexity", ...
    higher_is_better: ClassVar[bool]
    throughput: ClassVar[str] = "tok_s"  # the metrics.jsonl key of `batch_tokens` per second

    def __init__(self, config: RunConfig, out: Path, resume: bool):
        self.config, self.out, self.resume = config, out, resume

    # --- set-up, shared -------------------------------------------------------------------------------
    def _tokenizer(self, texts: list[str], mask: bool = False) -> Tokenizer:
        """The run's tokenizer: trained on `texts` (with <mask> when `mask`) and saved; when resuming, the one
        saved before; when fine-tuning (train.init_from), the pretrained model's, copied."""
        path = self.out / TOKENIZER_FILE
        init_from, m = self.config.train.init_from, self.config.model
        ids = dict(pad_id=m.pad_id, bos_id=m.bos_id, eos_id=m.eos_id) if init_from else {}  # an import's (BERT's)
        if self.resume:
            return Tokenizer.load(path, **ids)
        if init_from:
            tokenizer = Tokenizer.load(Path(init_from) / TOKENIZER_FILE, **ids)
            tokenizer.save(path)
            return tokenizer
        data = self.config.data
        logger.info("training a BPE vocabulary of %d on %d segments", data.vocab_size, len(texts))
        tokenizer = train_bpe(texts, data.vocab_size, data.min_frequency, split_han=data.split_han, mask=mask)
        tokenizer.save(path)
        return tokenizer

    def _resolve(self, tokenizer: Tokenizer) -> RunConfig:
        """The config with the model's vocabulary and special ids taken from `tokenizer`."""
        model = self.config.model.replace(
            src_vocab_size=tokenizer.vocab_size, tgt_vocab_size=tokenizer.vocab_size,
            pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id,
        )
        return self.config.replace(model=model)

    def build_model(self) -> nn.Module:
        return build_model(self.config.model)

    # --- what differs between tasks -------------------------------------------------------------------
    @abstractmethod
    def n_batches(self, epoch: int) -> int:
        """How many micro-batches epoch `epoch` has."""

    @abstractmethod
    def batches(self, epoch: int, start: int) -> Iterator[Any]:
        """The micro-batches of epoch `epoch` from number `start` on, in a deterministic order."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> Tensor:
        """The summed loss of `batch` (the loop divides by `loss_tokens` of the update's batches)."""

    @abstractmethod
    def loss_tokens(self, batch: Any) -> int:
        """How many predictions the loss of `batch` sums over."""

    @abstractmethod
    def batch_tokens(self, batch: Any) -> int:
        """Non-pad tokens a batch moves (images, for an image task), for the logged throughput."""

    @property
    @abstractmethod
    def has_validation(self) -> bool:
        """Whether there is a valid split to validate on."""

    @abstractmethod
    def validate(self, model: nn.Module) -> dict[str, float]:
        """Valid-split figures to log: at least valid_<metric> (the model is in eval mode)."""

    @abstractmethod
    def valid_metric(self, model: nn.Module) -> float:
        """valid_<metric> alone (to compare averaged weights with the best)."""

    def better(self, value: float, best: float | None) -> bool:
        """Whether `value` of the metric beats `best` (None: nothing yet)."""
        if best is None:
            return True
        return value > best if self.higher_is_better else value < best
