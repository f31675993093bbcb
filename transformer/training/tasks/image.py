"""Image classification (the Vision Transformer): batches of images, cross-entropy, valid accuracy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformer.config import RunConfig
from transformer.data.images import (
    DIGITS_CLASSES,
    DIGITS_SIZE,
    ImageBatch,
    image_batches,
    load_digits_split,
    n_image_batches,
)
from transformer.devices import model_device
from transformer.training.tasks.base import Task


class ImageTask(Task):
    metric, higher_is_better, throughput = "accuracy", True, "img_s"

    def __init__(self, config: RunConfig, out: Path, resume: bool):
        super().__init__(config, out, resume)
        self.images, self.labels = load_digits_split("train")
        self.valid_images, self.valid_labels = load_digits_split("valid")
        m = config.model
        if (m.image_size, m.channels, m.n_classes) != (DIGITS_SIZE, 1, DIGITS_CLASSES):
            raise ValueError(f"the digits are {DIGITS_SIZE} x {DIGITS_SIZE} grey images of {DIGITS_CLASSES} classes: "
                             f"set model.image_size={DIGITS_SIZE}, model.channels=1, model.n_classes={DIGITS_CLASSES} "
                             f"(got {m.image_size}, {m.channels}, {m.n_classes})")

    def n_batches(self, epoch: int) -> int:
        return n_image_batches(self.labels.numel(), self.config.train.batch_size)

    def batches(self, epoch: int, start: int) -> Iterator[ImageBatch]:
        t = self.config.train
        return image_batches(self.images, self.labels, t.batch_size, seed=t.seed, epoch=epoch, start=start,
                             max_shift=self.config.data.max_shift)

    def loss(self, model: nn.Module, batch: ImageBatch) -> Tensor:
        logits = model(batch.images).float()  # (B, K)
        return F.cross_entropy(logits, batch.labels, reduction="sum",
                               label_smoothing=self.config.train.label_smoothing)

    def loss_tokens(self, batch: ImageBatch) -> int:
        return len(batch)

    def batch_tokens(self, batch: ImageBatch) -> int:
        return len(batch)

    @property
    def has_validation(self) -> bool:
        return self.valid_labels.numel() > 0

    def validate(self, model: nn.Module) -> dict[str, float]:
        loss, accuracy = evaluate_images(model, self.valid_images, self.valid_labels, self.config.train.batch_size)
        return {"valid_loss": round(loss, 4), "valid_accuracy": round(accuracy, 4)}

    def valid_metric(self, model: nn.Module) -> float:
        return evaluate_images(model, self.valid_images, self.valid_labels, self.config.train.batch_size)[1]


@torch.no_grad()
def evaluate_images(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int) -> tuple[float, float]:
    """(mean cross-entropy, accuracy as a fraction in [0, 1]) of `model` on `images` (N, C, H, W)."""
    total, correct = 0.0, 0
    for start in range(0, labels.numel(), batch_size):
        logits = model(images[start : start + batch_size].to(model_device(model))).float().cpu()  # (B, K)
        target = labels[start : start + batch_size]
        total += float(F.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(dim=-1) == target).sum())
    return total / labels.numel(), correct / labels.numel()
