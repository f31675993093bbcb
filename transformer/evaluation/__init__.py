"""Evaluation metrics: sacrebleu BLEU and chrF with signatures, perplexity, accuracy."""

from transformer.evaluation.metrics import Score, accuracy, corpus_bleu, corpus_chrf, perplexity

__all__ = ["Score", "accuracy", "corpus_bleu", "corpus_chrf", "perplexity"]
