"""The one loop with each task: the model directory it writes, exact resume, and what `load` gives back."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

import transformer
from tests.corpus import (
    classify_config,
    image_config,
    lm_config,
    mlm_config,
    run_config,
    write_corpus,
    write_labelled_corpus,
    write_text_corpus,
)
from transformer.config import RunConfig
from transformer.models import DecoderOnly
from transformer.training.progress import progress_fields as _progress_fields
from transformer.training.trainer import train

CONFIGS = {"translation": (write_corpus, run_config), "lm": (write_text_corpus, lm_config),
           "mlm": (write_text_corpus, mlm_config), "classify": (write_labelled_corpus, classify_config),
           "image": (None, lambda root, **train: image_config(**train))}  # the digits come with scikit-learn


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    return {task: write and write(tmp_path_factory.mktemp(task)) for task, (write, _) in CONFIGS.items()}


def _config(corpora, task, **train_changes) -> RunConfig:
    return RunConfig.from_dict(CONFIGS[task][1](corpora[task], **train_changes))


@pytest.mark.parametrize("task", sorted(CONFIGS))
def test_a_resumed_run_equals_an_uninterrupted_one(corpora, task, tmp_path):
    train(_config(corpora, task, max_steps=6), tmp_path / "straight", progress_bar=False)
    train(_config(corpora, task, max_steps=3), tmp_path / "resumed", progress_bar=False)
    train(_config(corpora, task, max_steps=6), tmp_path / "resumed", resume=True, progress_bar=False)
    straight = load_file(tmp_path / "straight" / "checkpoints" / "step-6.safetensors")
    resumed = load_file(tmp_path / "resumed" / "checkpoints" / "step-6.safetensors")
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=0)


def test_a_language_model_run_logs_perplexity_and_loads_back(corpora, tmp_path):
    state = train(_config(corpora, "lm", max_steps=40, eval_every=20, log_every=10), tmp_path / "gpt",
                  progress_bar=False)
    records = [json.loads(line) for line in (tmp_path / "gpt" / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if "valid_perplexity" in r]
    assert [r["step"] for r in valid] == [20, 40]
    for r in valid:  # perplexity is exp of the (unsmoothed) valid loss
        assert r["valid_perplexity"] == pytest.approx(math.exp(r["valid_loss"]), rel=1e-3)
    assert valid[-1]["valid_perplexity"] < 300  # below a uniform guess over the 300-token vocabulary

    bundle = transformer.load(tmp_path / "gpt")
    assert isinstance(bundle.model, DecoderOnly) and bundle.task == "lm"
    best = min(valid, key=lambda r: r["valid_perplexity"])
    assert state.best_step == best["step"]
    texts = (corpora["lm"] / "valid.txt").read_text().splitlines()
    assert bundle.perplexity(texts) == pytest.approx(best["valid_perplexity"], rel=1e-3)
    first, again = bundle.generate("the king", max_new_tokens=8, seed=3), bundle.generate("the king", max_new_tokens=8,
                                                                                          seed=3)
    assert first == again and isinstance(first[0], str)
    with pytest.raises(ValueError, match="translate needs a model trained for task 'translation'"):
        bundle.translate(["the king"])


def test_the_config_yaml_of_a_run_names_its_task_and_model_type(corpora, tmp_path):
    train(_config(corpora, "lm", max_steps=2, eval_every=2), tmp_path / "gpt", progress_bar=False)
    config = RunConfig.load(str(tmp_path / "gpt" / "config.yaml"))
    assert (config.task, config.model.type, config.model.n_layers) == ("lm", "decoder_only", 2)


def test_a_progress_record_of_a_translation_run_from_before_the_tasks_still_resumes():
    old = {"step": 500, "best_bleu": 12.5, "best_step": 500}
    assert _progress_fields(old) == {"step": 500, "best_score": 12.5, "best_step": 500, "metrics_bytes": None,
                                     "finished": True}
    assert _progress_fields({"step": 3, "best_bleu": -1.0})["best_score"] is None  # none yet


@pytest.mark.parametrize(("tree", "message"), [
    ({"task": "lm", "model": {"type": "encoder_decoder"}}, "task='lm' trains a model.type='decoder_only'"),
    ({"task": "poetry"}, "task='poetry': use 'translation', 'lm', 'mlm', 'classify' or 'image'"),
    ({"task": "image", "model": {"n_layers": 1, "image_size": 8, "patch_size": 2, "n_classes": 10}},
     "the image task reads data.corpus='digits'"),
    ({"task": "lm", "model": {"n_layers": 1}, "data": {"corpus": "tsv", "train_tsv": "x"}},
     "task='lm' reads data.corpus='bible' or 'text'"),
    ({"task": "lm", "model": {"n_layers": 0}}, "needs model.n_layers > 0"),
])
def test_a_task_and_model_that_do_not_fit_are_a_one_line_error(tree, message):
    tree = {"train": {"max_steps": 1}, **tree}
    with pytest.raises(ValueError, match=message):
        RunConfig.from_dict(tree)


def test_an_image_run_logs_accuracy_and_classifies_after_loading(corpora, tmp_path):
    train(_config(corpora, "image", max_steps=60, eval_every=30, log_every=30), tmp_path / "vit", progress_bar=False)
    records = [json.loads(line) for line in (tmp_path / "vit" / "metrics.jsonl").read_text().splitlines()]
    valid = [r["valid_accuracy"] for r in records if "valid_accuracy" in r]
    assert len(valid) == 2 and all(0 <= a <= 1 for a in valid)
    assert max(valid) > 0.4  # 60 updates of a tiny model: well above the 0.1 of a guess
    bundle = transformer.load(tmp_path / "vit")
    assert bundle.tokenizer is None and not (tmp_path / "vit" / "tokenizer.json").exists()
    from transformer.data.images import load_digits_split

    images, labels = load_digits_split("valid")
    probs = bundle.classify(images)
    torch.testing.assert_close(probs.sum(dim=-1), torch.ones(len(labels)))
    assert float((probs.argmax(dim=-1) == labels).float().mean()) == pytest.approx(max(valid), abs=1e-4)


def test_init_from_starts_from_another_runs_weights_and_keeps_new_keys_fresh(corpora, tmp_path, caplog):
    from transformer.training.trainer import Trainer

    train(_config(corpora, "lm", max_steps=3), tmp_path / "pretrained", progress_bar=False)
    source = load_file(tmp_path / "pretrained" / "model.safetensors")
    config = _config(corpora, "lm", max_steps=3, init_from=str(tmp_path / "pretrained"))
    with caplog.at_level("WARNING"):
        trainer = Trainer(config, tmp_path / "finetuned", progress_bar=False)
    state = trainer.model.state_dict()
    for name, tensor in source.items():
        torch.testing.assert_close(state[name], tensor, rtol=0, atol=0)
    assert "initialized from" in caplog.text and "kept fresh (not in it): none" in caplog.text

    deeper = _config(corpora, "lm", max_steps=3, init_from=str(tmp_path / "pretrained"))
    deeper = deeper.replace(model=deeper.model.replace(n_layers=3))  # a third layer the source does not have
    trainer = Trainer(deeper, tmp_path / "deeper", progress_bar=False)
    assert "stack.layers.2.ff.fc1.weight" in caplog.text  # listed as kept fresh
    torch.testing.assert_close(trainer.model.state_dict()["stack.layers.0.ff.fc1.weight"],
                               source["stack.layers.0.ff.fc1.weight"], rtol=0, atol=0)


def test_a_masked_language_model_run_logs_perplexity_over_the_masked_tokens(corpora, tmp_path):
    train(_config(corpora, "mlm", max_steps=40, eval_every=20, log_every=10), tmp_path / "bert", progress_bar=False)
    records = [json.loads(line) for line in (tmp_path / "bert" / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if "valid_perplexity" in r]
    assert [r["step"] for r in valid] == [20, 40]
    assert valid[-1]["valid_perplexity"] < valid[0]["valid_perplexity"] < 300
    bundle = transformer.load(tmp_path / "bert")
    assert bundle.task == "mlm" and bundle.tokenizer.mask_id == 4
    vectors = bundle.embed(["the king went to the city.", "a woman wept."], normalize=True)
    assert vectors.shape == (2, 64)
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(2))


def test_patience_stops_after_that_many_validations_without_a_better_metric(corpora, tmp_path):
    from transformer.training.trainer import Trainer

    scripted = iter([50.0, 40.0, 45.0, 41.0, 30.0])  # perplexity: lower is better; two worse in a row stop it
    trainer = Trainer(_config(corpora, "lm", max_steps=30, eval_every=2, log_every=100, patience=2),
                      tmp_path / "gpt", progress_bar=False)
    trainer.task.validate = lambda model: {"valid_perplexity": next(scripted)}
    state = trainer.train()
    assert (state.step, state.best_step, state.best_score) == (8, 4, 40.0)
    records = [json.loads(line) for line in (tmp_path / "gpt" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "valid_perplexity" in r] == [2, 4, 6, 8]
    assert records[-1].get("early_stop") is True and not any(r.get("early_stop") for r in records[:-1])
