"""Corpus BLEU and chrF through sacrebleu (detokenized text, signature kept), perplexity, accuracy."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from sacrebleu.metrics import BLEU, CHRF


@dataclass(frozen=True)
class Score:
    """A corpus score: ``name`` ("BLEU", "chrF2"), ``score``, sacrebleu's ``signature`` and ``detail`` line."""

    name: str
    score: float
    signature: str
    detail: str

    def __str__(self) -> str:
        return f"{self.detail} {self.signature}"


def _check_corpus(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[list[str], list[str]]:
    for label, lines in (("hypotheses", hypotheses), ("references", references)):
        if isinstance(lines, str):
            raise ValueError(f"{label} must be a list of strings (one a segment), got a single string")
        bad = next((line for line in lines if not isinstance(line, str)), None)
        if bad is not None:
            raise ValueError(
                f"{label} must be a flat list of strings, found {type(bad).__name__} {bad!r:.60}; "
                "pass one reference string per hypothesis (not sacrebleu's [references] nesting)"
            )
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} references; "
            "they must be aligned line by line (same count)"
        )
    if not hypotheses:
        raise ValueError("no hypotheses and no references: the corpus is empty")
    return list(hypotheses), list(references)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> Score:
    """sacrebleu corpus BLEU (13a tokenizer, mixed case) of detokenized hypotheses against one reference each."""
    hyps, refs = _check_corpus(hypotheses, references)
    metric = BLEU()
    result = metric.corpus_score(hyps, [refs])
    return Score("BLEU", float(result.score), str(metric.get_signature()), result.format())


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> Score:
    """sacrebleu corpus chrF2 of detokenized hypotheses against one reference each."""
    hyps, refs = _check_corpus(hypotheses, references)
    metric = CHRF()
    result = metric.corpus_score(hyps, [refs])
    return Score(result.name, float(result.score), str(metric.get_signature()), result.format())


def perplexity(mean_nll: float) -> float:
    """``exp(mean_nll)`` for a mean negative log-likelihood in nats; ``inf`` instead of an overflow."""
    value = float(mean_nll)
    if math.isnan(value):
        return math.nan
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf


def accuracy(predictions: torch.Tensor, targets: torch.Tensor, ignore_index: int | None = None) -> float:
    """Fraction of positions where ``predictions == targets``, skipping targets equal to ``ignore_index``."""
    if predictions.shape != targets.shape:
        raise ValueError(
            f"predictions shape {tuple(predictions.shape)} differs from targets shape {tuple(targets.shape)}"
        )
    keep = torch.ones_like(targets, dtype=torch.bool) if ignore_index is None else targets != ignore_index
    count = int(keep.sum())
    if count == 0:
        raise ValueError("accuracy over zero positions: every target equals ignore_index or the input is empty")
    return int(((predictions == targets) & keep).sum()) / count
