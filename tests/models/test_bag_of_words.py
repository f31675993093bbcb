"""The bag-of-words and n-gram (fastText) classifiers: their logits against closed forms computed here with torch's
functional ops, their order (in)variances, and a run of the classify task through the command line that learns
the toy task, then predicts, evaluates and embeds with the model directory it wrote."""

import json

import pytest
import torch
import torch.nn.functional as F
import yaml

from tests.corpus import classify_config
from transformer.cli import main
from transformer.config import ModelConfig
from transformer.models import build_model
from transformer.models.bag_of_words import BagOfWords, NGramClassifier

V, D, K, PAD = 50, 16, 3, 0


def _randomized(model: BagOfWords) -> BagOfWords:
    """`model` in float64 and eval mode, its (zero-initialized) classifier given random weights."""
    torch.manual_seed(0)
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    return model


def _tokens(rows: list[list[int]]) -> torch.Tensor:
    """Right-padded (B, T) ids of `rows`."""
    width = max(map(len, rows))
    return torch.tensor([row + [PAD] * (width - len(row)) for row in rows])


def _closed_form(model: BagOfWords, bags: list[list[int]]) -> torch.Tensor:
    """mean of the table rows of each bag @ W^T + b, one bag at a time: (B, K)."""
    E, W, b = model.embed.tokens.weight, model.classifier.weight, model.classifier.bias
    return torch.stack([F.linear(F.embedding(torch.tensor(rows), E).mean(dim=0), W, b) for rows in bags])


def test_the_bag_of_words_logits_are_the_mean_of_the_rows_through_the_linear_layer():
    model = _randomized(build_model(ModelConfig(type="bag_of_words", tgt_vocab_size=V, d_model=D, n_classes=K,
                                                n_heads=1, pad_id=PAD)))
    assert isinstance(model, BagOfWords) and not isinstance(model, NGramClassifier)
    rows = [[5, 7, 7, 9], [3], [12, 40, 2, 2, 2, 8, 49]]
    torch.testing.assert_close(model.classify(_tokens(rows)), _closed_form(model, rows), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.sentence_embedding(_tokens(rows), normalize=True).norm(dim=-1),
                               torch.ones(3, dtype=torch.float64))


def test_the_bag_of_words_is_exactly_invariant_under_permutations_of_tokens_and_padding():
    model = _randomized(BagOfWords(V, D, K, pad_id=PAD))
    generator = torch.Generator().manual_seed(1)
    tokens = _tokens([[5, 7, 7, 9, 1], [3, 4], [12, 40, 2, 2, 2, 8, 49]])  # (3, 7)
    logits = model.classify(tokens)
    for _ in range(5):  # each row's positions, pads included, shuffled
        order = torch.stack([torch.randperm(tokens.size(1), generator=generator) for _ in range(len(tokens))])
        assert torch.equal(model.classify(tokens.gather(1, order)), logits)
    assert torch.equal(model.classify(F.pad(tokens, (0, 4), value=PAD)), logits)  # more padding


def test_the_ngram_model_of_order_1_is_the_bag_of_words_over_its_unigram_table():
    ngram = _randomized(NGramClassifier(V, D, K, pad_id=PAD, order=1, buckets=64))
    bag = BagOfWords(V, D, K, pad_id=PAD).double().eval()
    bag.load_state_dict(ngram.state_dict())  # the same tables: order 1 has no bucket rows
    tokens = _tokens([[5, 7, 7, 9], [3], [12, 40, 2, 2, 8]])
    assert torch.equal(ngram.classify(tokens), bag.classify(tokens))


def _bigram_row(a: int, b: int, buckets: int) -> int:
    """fastText's hash of the bigram (a, b), written out: V + (a * 116049371 + b) mod buckets."""
    return V + (a * 116049371 + b) % buckets


def test_the_bigram_model_is_the_mean_over_tokens_and_hashed_bigrams():
    model = _randomized(build_model(ModelConfig(type="ngram", tgt_vocab_size=V, d_model=D, n_classes=K, n_heads=1,
                                                pad_id=PAD, ngram_order=2, ngram_buckets=37)))
    assert isinstance(model, NGramClassifier) and model.embed.tokens.num_embeddings == V + 37
    rows = [[5, 7, 7, 9], [3], [12, 40, 2, 8, 49]]
    bags = [row + [_bigram_row(a, b, 37) for a, b in zip(row[:-1], row[1:], strict=True)]  # pads make none
            for row in rows]
    torch.testing.assert_close(model.classify(_tokens(rows)), _closed_form(model, bags), rtol=1e-12, atol=1e-12)


def test_the_bigram_model_sees_local_order_but_not_more():
    model = _randomized(NGramClassifier(V, D, K, pad_id=PAD, order=2, buckets=1000))
    a, b, c = 4, 9, 17
    sentence = torch.tensor([[a, b, a, c, a]])
    logits = model.classify(sentence)
    assert not torch.allclose(model.classify(torch.tensor([[a, a, a, b, c]])), logits)  # same tokens, new bigrams
    assert torch.equal(model.classify(sentence.flip(1)), logits)  # a c a b a: the bigrams (a b) (b a) (a c) (c a)
    assert torch.equal(model.classify(F.pad(sentence, (0, 3), value=PAD)), logits)  # padding adds no n-gram
    trigrams = _randomized(NGramClassifier(V, D, K, pad_id=PAD, order=3, buckets=1000))
    assert not torch.allclose(trigrams.classify(sentence.flip(1)), trigrams.classify(sentence))  # (b a c) is new


def test_what_a_bag_has_not_is_refused_by_name():
    model = BagOfWords(V, D, K, pad_id=PAD)
    tokens = _tokens([[5, 7]])
    with pytest.raises(ValueError, match="model.type='bag_of_words' reads no token types"):
        model.classify(tokens, torch.zeros_like(tokens))
    with pytest.raises(ValueError, match="model.embed_pooling='cls': model.type='bag_of_words'.*embed_pooling=mean"):
        model.sentence_embedding(tokens, "cls")
    with pytest.raises(ValueError, match="model.type='ngram' needs model.n_classes >= 2"):
        build_model(ModelConfig(type="ngram", tgt_vocab_size=V, d_model=D, n_heads=1))


def _run(*argv: str, capsys) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_bag_of_words_trained_from_the_command_line_learns_the_toy_task_and_classifies(labelled_corpus, tmp_path,
                                                                                      capsys):
    tree = classify_config(labelled_corpus, max_steps=40, eval_every=40, lr=0.05)
    tree["model"] = {"type": "bag_of_words", "d_model": 32, "n_heads": 1, "dropout": 0.0}
    config, out = tmp_path / "bow.yaml", tmp_path / "bow"
    config.write_text(yaml.safe_dump(tree))
    code, printed, _ = _run("train", str(config), "--out", str(out), "--no-progress", capsys=capsys)
    assert code == 0 and json.loads(printed.splitlines()[-1])["best_valid_accuracy"] > 0.6  # majority class: 0.4
    assert {"config.yaml", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}

    code, printed, _ = _run("predict", "--model", str(out), "the king wept by the river.", "a man went to the city.",
                            capsys=capsys)
    assert code == 0 and [json.loads(line)["label"] for line in printed.splitlines()] == ["rest", "motion"]
    code, printed, _ = _run("evaluate", "--model", str(out), "--split", "valid", capsys=capsys)
    assert code == 0 and json.loads(printed.splitlines()[-1])["accuracy"] > 0.6
    (tmp_path / "texts.txt").write_text("the man sat.\n")
    code, printed, _ = _run("embed", "--model", str(out), "--input", str(tmp_path / "texts.txt"), capsys=capsys)
    assert code == 0 and len(json.loads(printed)) == 32

    code, _, err = _run("attention", "--model", str(out), "--text", "the man sat.", "--out", str(tmp_path / "a"),
                        capsys=capsys)
    assert code == 2 and ("attention is built for the Transformer's layers, and model.type='bag_of_words' is a bag "
                          "of words") in err
    code, _, err = _run("export-ct2", "--model", str(out), "--out", str(tmp_path / "ct2"), capsys=capsys)
    assert code == 2 and ("export-ct2 (a CTranslate2 TransformerSpec) is built for the Transformer's layers, and "
                          "model.type=") in err
    code, _, err = _run("export-onnx", "--model", str(out), "--out", str(tmp_path / "onnx"), capsys=capsys)
    assert code == 2 and "export-onnx is built for the Transformer's layers, and model.type='bag_of_words'" in err

    tree["train"]["init_from"] = str(out)
    config.write_text(yaml.safe_dump(tree))
    code, _, err = _run("train", str(config), "--out", str(tmp_path / "again"), "--no-progress", capsys=capsys)
    assert code == 2 and "train.init_from=" in err and "model.type='bag_of_words' is trained from scratch" in err


def test_a_bigram_model_learns_the_toy_task(labelled_corpus, tmp_path):
    from transformer.config import RunConfig
    from transformer.training.trainer import train

    tree = classify_config(labelled_corpus, max_steps=40, eval_every=40, lr=0.05)
    tree["model"] = {"type": "ngram", "ngram_order": 2, "ngram_buckets": 1024, "d_model": 32, "n_heads": 1,
                     "dropout": 0.1}
    state = train(RunConfig.from_dict(tree), tmp_path / "ngram", progress_bar=False)
    assert state.best_score > 0.6
