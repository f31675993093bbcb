"""The classify task: a labelled-text classifier trained by the one loop, fine-tuned from a pretrained encoder,
its label subsets, its scores (against scikit-learn's) and its errors."""

import json
from collections import Counter

import pytest
import torch
import yaml
from safetensors.torch import load_file

import transformer
from tests.corpus import VERB_LABELS, classify_config, mlm_config
from transformer.config import RunConfig
from transformer.evaluation.classification import classification_scores, stratified_subset
from transformer.models import EncoderOnly
from transformer.training.trainer import Trainer, train


def test_a_classifier_run_logs_accuracy_and_classifies_after_loading(classifier_dir, labelled_corpus):
    records = [json.loads(line) for line in (classifier_dir / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if "valid_accuracy" in r]
    assert [r["step"] for r in valid] == [30, 60] and all(0 <= r["valid_accuracy"] <= 1 for r in valid)
    assert valid[-1]["valid_accuracy"] > 0.6  # the majority class ("motion", 2 verbs of 5) is about 0.4
    bundle = transformer.load(classifier_dir)
    assert isinstance(bundle.model, EncoderOnly) and bundle.task == "classify"
    assert bundle.config.model.labels == tuple(sorted(set(VERB_LABELS.values())))  # recorded in config.yaml
    rows = [line.split("\t") for line in (labelled_corpus / "valid.tsv").read_text().splitlines()]
    probs = bundle.classify_texts([text for text, _ in rows])
    torch.testing.assert_close(probs.sum(dim=-1), torch.ones(len(rows)))
    predicted = [bundle.config.model.labels[i] for i in probs.argmax(dim=-1).tolist()]
    accuracy = sum(p == label for p, (_, label) in zip(predicted, rows, strict=True)) / len(rows)
    assert accuracy == pytest.approx(max(r["valid_accuracy"] for r in valid), abs=1e-4)
    assert bundle.embed(["the king wept."]).shape == (1, 64)  # a fine-tuned encoder still embeds


def test_fine_tuning_starts_from_the_pretrained_encoder_tokenizer_and_architecture(labelled_corpus, tmp_path,
                                                                                 caplog):
    pretrained = tmp_path / "pretrained"
    train(RunConfig.from_dict(mlm_config(labelled_corpus, max_steps=4, eval_every=4)), pretrained,
          progress_bar=False)
    tree = classify_config(labelled_corpus, max_steps=4, init_from=str(pretrained))
    tree["model"] = {"dropout": 0.2}  # the rest of the model section comes from the pretrained config.yaml
    (tmp_path / "finetune.yaml").write_text(yaml.safe_dump(tree))
    config = RunConfig.load(str(tmp_path / "finetune.yaml"))
    base = RunConfig.load(str(pretrained / "config.yaml")).model
    assert config.model.replace(dropout=base.dropout) == base and config.model.dropout == 0.2
    with caplog.at_level("WARNING"):
        trainer = Trainer(config, tmp_path / "finetuned", progress_bar=False)
    assert (tmp_path / "finetuned" / "tokenizer.json").read_bytes() == (pretrained / "tokenizer.json").read_bytes()
    source, state = load_file(pretrained / "model.safetensors"), trainer.model.state_dict()
    tied = {"output_proj.weight"}  # the token embedding, stored once
    assert {name for name in state if name not in source} == {"classifier.weight", "classifier.bias"} | tied
    for name, tensor in source.items():
        torch.testing.assert_close(state[name], tensor, rtol=0, atol=0)
    assert "classifier.weight" in caplog.text  # listed as kept fresh
    assert trainer.config.model.n_classes == 3


def test_init_from_a_directory_without_a_model_is_a_one_line_error(labelled_corpus, tmp_path):
    tree = classify_config(labelled_corpus, init_from=str(tmp_path / "nothing"))
    (tmp_path / "finetune.yaml").write_text(yaml.safe_dump(tree))
    with pytest.raises(ValueError, match="train.init_from=.*nothing' holds no config.yaml"):
        RunConfig.load(str(tmp_path / "finetune.yaml"))


def test_a_label_fraction_keeps_that_share_of_each_class_and_at_least_one(labelled_corpus, tmp_path):
    labels = [0] * 500 + [1] * 300 + [2] * 7
    kept = stratified_subset(labels, 0.1, seed=3)
    assert Counter(labels[i] for i in kept) == {0: 50, 1: 30, 2: 1}
    assert kept == sorted(kept) and kept == stratified_subset(labels, 0.1, seed=3) != stratified_subset(labels, 0.1, 4)
    assert stratified_subset(labels, 1.0, seed=3) == list(range(len(labels)))

    tree = classify_config(labelled_corpus, max_steps=2)
    tree["data"]["label_fraction"] = 0.1
    config = RunConfig.from_dict(tree)
    trainer = Trainer(config, tmp_path / "few", progress_bar=False)
    assert len(trainer.task.examples) == pytest.approx(30, abs=2)  # 10% of 300, rounded per class


def test_the_scores_equal_scikit_learns():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, log_loss

    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(200, 4, generator=generator, dtype=torch.float64), dim=-1)
    labels = torch.randint(0, 4, (200,), generator=generator)
    labels[:40] = 2  # unbalanced classes, so that balanced accuracy differs from accuracy
    scores = classification_scores(probs, labels)
    predicted = probs.argmax(dim=-1).numpy()
    assert scores["accuracy"] == pytest.approx(accuracy_score(labels.numpy(), predicted))
    assert scores["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels.numpy(), predicted))
    assert scores["loss"] == pytest.approx(log_loss(labels.numpy(), probs.numpy(), labels=range(4)), rel=1e-5)


def test_a_label_not_seen_in_training_is_a_one_line_error(labelled_corpus, tmp_path):
    bad = tmp_path / "valid.tsv"
    bad.write_text("the man went to the city.\tmotion\nthe king sang.\tsong\n")
    tree = classify_config(labelled_corpus, max_steps=2)
    tree["data"]["valid_tsv"] = str(bad)
    with pytest.raises(ValueError, match=r"the valid split: labels \['song'\] are not among the 3"):
        Trainer(RunConfig.from_dict(tree), tmp_path / "run", progress_bar=False)
    three = tmp_path / "three.tsv"
    three.write_text("a\tx\tz\n")
    tree["data"]["train_tsv"] = str(three)
    with pytest.raises(ValueError, match=r"three.tsv:1: expected 2 tab-separated columns \(text, label\), found 3"):
        Trainer(RunConfig.from_dict(tree), tmp_path / "run2", progress_bar=False)


@pytest.mark.parametrize(("changes", "message"), [
    ({"data": {"label_fraction": 0}}, r"data.label_fraction=0 must be in \(0, 1\]"),
    ({"data": {"corpus": "text", "train_text": "x"}}, "task='classify' reads data.corpus='bible'"),
    ({"data": {"bible_split": "chapters"}}, "data.bible_split='chapters': use 'books' or 'genres'"),
    ({"model": {"n_layers": 1, "n_classes": 2, "labels": ["a", "b", "c"]}}, "model.labels names 3 classes but"),
])
def test_bad_classify_settings_are_one_line_errors(changes, message):
    tree = {"task": "classify", "model": {"n_layers": 1}, "train": {"max_steps": 1}, **changes}
    with pytest.raises(ValueError, match=message):
        RunConfig.from_dict(tree)
