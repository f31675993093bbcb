import math

import pytest
import sacrebleu
import torch

from transformer.evaluation import Score, accuracy, corpus_bleu, corpus_chrf, perplexity

HYPS = [
    "The cat sat on the mat.",
    "In the beginning God created the heaven and the earth.",
    "He went home, and slept.",
]
REFS = [
    "The cat is sitting on the mat.",
    "In the beginning God created the heavens and the earth.",
    "Then he went home and slept.",
]


def test_bleu_matches_sacrebleu():
    score = corpus_bleu(HYPS, REFS)
    expected = sacrebleu.corpus_bleu(HYPS, [REFS])
    assert isinstance(score, Score) and score.name == "BLEU"
    assert score.score == pytest.approx(expected.score)
    assert score.detail == str(expected)
    assert score.detail.startswith("BLEU = ")
    assert "tok:13a" in score.signature and "nrefs:1" in score.signature
    assert str(score) == f"{score.detail} {score.signature}"


def test_chrf_matches_sacrebleu():
    score = corpus_chrf(HYPS, REFS)
    expected = sacrebleu.corpus_chrf(HYPS, [REFS])
    assert score.name == "chrF2"
    assert score.score == pytest.approx(expected.score)
    assert score.detail == str(expected)


def test_identical_text_scores_100():
    assert corpus_bleu(REFS, REFS).score == pytest.approx(100.0)
    assert corpus_chrf(REFS, REFS).score == pytest.approx(100.0)


def test_hand_computed_bleu():
    # Hypothesis "a b c d e" vs reference "a b c d f": precisions 4/5, 3/4, 2/3, 1/2 and BP = 1.
    score = corpus_bleu(["a b c d e"], ["a b c d f"])
    expected = 100 * math.exp((math.log(4 / 5) + math.log(3 / 4) + math.log(2 / 3) + math.log(1 / 2)) / 4)
    assert score.score == pytest.approx(expected)


def test_count_mismatch_names_both_counts():
    with pytest.raises(ValueError, match="3 hypotheses but 2 references"):
        corpus_bleu(HYPS, REFS[:2])
    with pytest.raises(ValueError, match="2 hypotheses but 3 references"):
        corpus_chrf(HYPS[:2], REFS)


def test_bad_corpus_shapes():
    with pytest.raises(ValueError, match="empty"):
        corpus_bleu([], [])
    with pytest.raises(ValueError, match="flat list of strings, found list"):
        corpus_bleu(HYPS, [REFS])
    with pytest.raises(ValueError, match="single string"):
        corpus_bleu("a hypothesis", "a reference")


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(7.5)) == pytest.approx(7.5)
    assert perplexity(torch.tensor(2.0)) == pytest.approx(math.e**2)
    assert perplexity(1e6) == math.inf
    assert math.isnan(perplexity(math.nan))


def test_accuracy():
    pred = torch.tensor([[1, 2, 3], [4, 5, 0]])
    gold = torch.tensor([[1, 2, 4], [4, 0, 0]])
    assert accuracy(pred, gold) == pytest.approx(4 / 6)
    assert accuracy(pred, gold, ignore_index=0) == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match=r"\(2, 3\) differs from targets shape \(3,\)"):
        accuracy(pred, gold[0])
    with pytest.raises(ValueError, match="zero positions"):
        accuracy(pred, torch.zeros_like(gold), ignore_index=0)
