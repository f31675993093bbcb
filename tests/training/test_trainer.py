import json

import pytest
import torch
from safetensors.torch import load_file

import transformer.training.trainer as trainer_module
from tests.corpus import run_config, write_corpus
from transformer.config import RunConfig
from transformer.inference import load_model_dir
from transformer.training.schedule import cooldown_factor, inverse_sqrt_lr
from transformer.training.trainer import NonFiniteLossError, train


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def _config(corpus, **train_changes) -> RunConfig:
    return RunConfig.from_dict(run_config(corpus, **train_changes))


def test_run_directory_holds_what_the_design_says(corpus, tmp_path):
    state = train(_config(corpus, average_last=2), tmp_path / "run", progress_bar=False)
    assert state.step == 6
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.yaml", "model.safetensors", "tokenizer.json", "train_state.pt", "metrics.jsonl",
            "loss.png", "checkpoints"} <= names
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [2, 4, 6]
    assert [r["step"] for r in records if "valid_bleu" in r] == [3, 6]
    assert any("valid_bleu_averaged" in r for r in records)
    model, tokenizer, config = load_model_dir(tmp_path / "run")
    assert config.model.src_vocab_size == tokenizer.vocab_size
    assert not model.training
    # weights are torch-loadable with weights_only (no pickled code)
    torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)


def test_resumed_run_equals_uninterrupted_run(corpus, tmp_path):
    train(_config(corpus, max_steps=6), tmp_path / "straight", progress_bar=False)
    train(_config(corpus, max_steps=3), tmp_path / "resumed", progress_bar=False)
    train(_config(corpus, max_steps=6), tmp_path / "resumed", resume=True, progress_bar=False)
    straight = load_file(tmp_path / "straight" / "checkpoints" / "step-6.safetensors")
    resumed = load_file(tmp_path / "resumed" / "checkpoints" / "step-6.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=0)


def test_resume_to_a_step_not_beyond_the_checkpoint_is_an_error(corpus, tmp_path):
    train(_config(corpus, max_steps=3), tmp_path / "run", progress_bar=False)
    with pytest.raises(ValueError, match=r"already at step 3, and train.max_steps=3 is not beyond it"):
        train(_config(corpus, max_steps=3), tmp_path / "run", resume=True, progress_bar=False)


def test_new_run_refuses_to_overwrite_an_existing_one(corpus, tmp_path):
    train(_config(corpus, max_steps=3), tmp_path / "run", progress_bar=False)
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match=r"already holds a training run; pass --resume"):
        train(_config(corpus, max_steps=3), tmp_path / "run", progress_bar=False)
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path, monkeypatch):
    real_loss = trainer_module.label_smoothed_cross_entropy
    calls = {"n": 0}

    def poisoned(logits, *args, **kwargs):
        calls["n"] += 1
        total, n = real_loss(logits, *args, **kwargs)
        return (total * float("nan"), n) if calls["n"] == 5 and logits.requires_grad else (total, n)

    monkeypatch.setattr(trainer_module, "label_smoothed_cross_entropy", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at step \d+ \(learning rate .*lower train.lr"):
        train(_config(corpus, max_steps=10, eval_every=2), tmp_path / "run", progress_bar=False)
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)
    assert state["step"] >= 2
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_cooldown_decays_the_logged_learning_rate_to_the_formula(corpus, tmp_path):
    config = _config(corpus, max_steps=8, log_every=1, eval_every=100, warmup=2, cooldown=0.5)
    train(config, tmp_path / "run", progress_bar=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r["lr"] for r in records if "loss" in r]
    # update n (from 1) runs at budget share (n - 1) / 8: full schedule for n <= 5, then linear decay to 0
    expected = [inverse_sqrt_lr(n, warmup=2, peak_lr=3e-3) * cooldown_factor((n - 1) / 8, 0.5) for n in range(1, 9)]
    assert logged == pytest.approx(expected, rel=1e-12)
    assert logged[4] == pytest.approx(inverse_sqrt_lr(5, warmup=2, peak_lr=3e-3))  # cooldown not yet begun
    assert logged[-1] == pytest.approx(inverse_sqrt_lr(8, warmup=2, peak_lr=3e-3) / 4)  # share 7/8: factor 1/4
