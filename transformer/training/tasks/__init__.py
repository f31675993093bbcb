"""The tasks the one training loop trains (config key `task:`), each a `Task` (base.py)."""

from __future__ import annotations

from pathlib import Path

from transformer.config import RunConfig
from transformer.training.tasks.base import Task
from transformer.training.tasks.classify import ClassifyTask
from transformer.training.tasks.image import ImageTask
from transformer.training.tasks.lm import LanguageModelTask
from transformer.training.tasks.mlm import MaskedLanguageModelTask
from transformer.training.tasks.translation import TranslationTask

TASKS: dict[str, type[Task]] = {"translation": TranslationTask, "lm": LanguageModelTask,
                                "mlm": MaskedLanguageModelTask, "classify": ClassifyTask, "image": ImageTask}


def make_task(config: RunConfig, out: Path, resume: bool) -> Task:
    """The Task of `config.task`, its data and tokenizer loaded."""
    return TASKS[config.task](config, out, resume)


__all__ = ["TASKS", "ClassifyTask", "ImageTask", "LanguageModelTask", "MaskedLanguageModelTask", "Task",
           "TranslationTask", "make_task"]
