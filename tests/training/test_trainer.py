import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import transformer.training.tasks.translation as translation_task
from tests.corpus import run_config, write_corpus
from transformer.config import RunConfig
from transformer.inference import load_model_dir
from transformer.training.schedule import cooldown_factor, inverse_sqrt_lr, learning_rate
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
    real_loss = translation_task.teacher_forced_loss
    calls = {"n": 0}

    def poisoned(model, *args, **kwargs):
        calls["n"] += 1
        total, n = real_loss(model, *args, **kwargs)
        return (total * float("nan"), n) if calls["n"] == 5 and torch.is_grad_enabled() else (total, n)

    monkeypatch.setattr(translation_task, "teacher_forced_loss", poisoned)
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


@pytest.mark.parametrize("bf16", [False, True])
def test_non_finite_loss_message_suggests_only_options_that_exist(corpus, tmp_path, monkeypatch, bf16):
    real_loss = translation_task.teacher_forced_loss

    def poisoned(model, *args, **kwargs):
        total, n = real_loss(model, *args, **kwargs)
        return total * float("nan"), n

    monkeypatch.setattr(translation_task, "teacher_forced_loss", poisoned)
    with pytest.raises(NonFiniteLossError) as caught:
        train(_config(corpus, max_steps=2, bf16=bf16), tmp_path / "run", progress_bar=False)
    message = str(caught.value)
    assert "fp16" not in message and "train.clip_norm" in message
    assert ("train.bf16=false" in message) == bf16


def _write_the_old_way(path, warmup: int, peak_lr: float) -> None:
    """Rewrite train_state.pt as the trainer wrote it when a LambdaLR set the learning rate: a "scheduler" entry
    with the LambdaLR's state, and param groups holding its "initial_lr" and the lr of the coming update. Runs of
    that time had no manifest.json and no metrics_bytes or finished in their progress."""
    for manifest in path.parent.rglob("manifest.json"):
        manifest.unlink()
    payload = torch.load(path, weights_only=True)
    for key in ("metrics_bytes", "finished"):
        del payload["extra"]["progress"][key]
    groups = payload["optimizer"]["param_groups"]
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1)) for _ in groups], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda done: inverse_sqrt_lr(done + 1, warmup=warmup, peak_lr=peak_lr))
    for _ in range(payload["step"]):
        optimizer.step()
        scheduler.step()
    payload["scheduler"] = scheduler.state_dict()
    for group, lr in zip(groups, scheduler.get_last_lr(), strict=True):
        group["initial_lr"], group["lr"] = 1.0, lr
    torch.save(payload, path)


def test_a_train_state_written_with_a_scheduler_resumes_on_the_pure_learning_rate(corpus, tmp_path):
    train(_config(corpus, max_steps=3), tmp_path / "new", progress_bar=False)
    shutil.copytree(tmp_path / "new", tmp_path / "old")
    _write_the_old_way(tmp_path / "old" / "train_state.pt", warmup=4, peak_lr=3e-3)
    assert torch.load(tmp_path / "old" / "train_state.pt", weights_only=True)["scheduler"]["last_epoch"] == 3
    for run in ("new", "old"):
        resumed = _config(corpus, max_steps=6, log_every=1, eval_every=100, cooldown=0.5)
        train(resumed, tmp_path / run, resume=True, progress_bar=False)
    records = [json.loads(line) for line in (tmp_path / "old" / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r["lr"] for r in records if "loss" in r and r["step"] > 3}
    # update n runs at budget share (n - 1) / 6: updates 4, 5, 6 at factors 1, 2/3, 1/3 of the cooldown
    expected = {n: learning_rate(n, (n - 1) / 6, warmup=4, peak_lr=3e-3, cooldown=0.5) for n in (4, 5, 6)}
    assert logged == pytest.approx(expected, rel=1e-12)
    old = load_file(tmp_path / "old" / "checkpoints" / "step-6.safetensors")
    new = load_file(tmp_path / "new" / "checkpoints" / "step-6.safetensors")
    for name in new:
        torch.testing.assert_close(old[name], new[name], rtol=0, atol=0)
