import os
import random

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

from transformer.training import (
    apply_weights,
    atomic_path,
    atomic_write_text,
    average_weights,
    inverse_sqrt_lr,
    learning_rate,
    load_train_state,
    load_weights,
    make_optimizer,
    save_train_state,
    save_weights,
    set_learning_rate,
    unwrap_model,
)


class Tied(nn.Module):
    """Embedding and output projection sharing one matrix, plus an integer buffer."""

    def __init__(self, vocab: int = 11, d: int = 6):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.hidden = nn.Linear(d, d)
        self.out = nn.Linear(d, vocab, bias=False)
        self.out.weight = self.embed.weight
        self.register_buffer("count", torch.tensor([3], dtype=torch.long))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(self.embed(tokens))))


class CompiledLike(nn.Module):
    """Stands in for torch.compile's OptimizedModule, which keeps the model as ``_orig_mod``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self._orig_mod = model


def _no_temp_files(directory) -> bool:
    return not [name for name in os.listdir(directory) if name.endswith(".tmp")]


def test_weights_round_trip_keeps_ties(tmp_path):
    torch.manual_seed(0)
    model = Tied()
    path = tmp_path / "run" / "model.safetensors"
    save_weights(model, path)
    stored = safetensors.torch.load_file(str(path))
    assert len(stored) == len(model.state_dict()) - 1  # the tied matrix is stored once
    torch.manual_seed(1)
    fresh = Tied()
    load_weights(fresh, path)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], value, rtol=0, atol=0)
    assert fresh.out.weight is fresh.embed.weight
    tokens = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(fresh(tokens), model(tokens))
    assert _no_temp_files(path.parent)


def test_wrapper_prefixes_are_not_saved(tmp_path):
    model = Tied()
    wrapped = CompiledLike(model)
    assert next(iter(wrapped.state_dict())).startswith("_orig_mod.")
    assert unwrap_model(wrapped) is model
    path = tmp_path / "model.safetensors"
    save_weights(wrapped, path)
    assert not any(key.startswith(("_orig_mod.", "module.")) for key in safetensors.torch.load_file(str(path)))
    fresh = Tied()
    load_weights(CompiledLike(fresh), path)  # loading into a wrapper works too
    torch.testing.assert_close(fresh.hidden.weight, model.hidden.weight)


def test_prefixed_state_from_elsewhere_is_stripped():
    model = Tied()
    state = {f"module._orig_mod.{k}": v.clone() for k, v in model.state_dict().items()}
    fresh = Tied()
    apply_weights(fresh, state)
    torch.testing.assert_close(fresh.hidden.bias, model.hidden.bias)


def test_mismatch_lists_missing_unexpected_and_shapes(tmp_path):
    path = tmp_path / "model.safetensors"
    save_weights(Tied(vocab=11), path)
    with pytest.raises(ValueError) as info:
        load_weights(Tied(vocab=13), path)
    message = str(info.value)
    assert "shape mismatch" in message and "(11, 6)" in message and "(13, 6)" in message
    assert "embed.weight" in message and "out.weight" in message

    other = nn.Sequential()
    other.add_module("hidden", nn.Linear(6, 6))
    other.add_module("extra", nn.Linear(2, 2))
    with pytest.raises(ValueError) as info:
        load_weights(other, path)
    message = str(info.value)
    assert "missing keys (2): extra.weight, extra.bias" in message
    assert "unexpected keys" in message and "embed.weight" in message and "count" in message
    missing, unexpected = load_weights(other, path, strict=False)
    assert missing == ["extra.weight", "extra.bias"] and "count" in unexpected


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        load_weights(Tied(), tmp_path / "nothing.safetensors")
    with pytest.raises(FileNotFoundError, match="state.pt"):
        load_train_state(tmp_path / "state.pt", make_optimizer(Tied(), lr=1.0), None)


def _train(model, opt, first_update, steps):
    """`steps` updates numbered from `first_update`, each with the section 5.3 learning rate written first."""
    for update in range(first_update, first_update + steps):
        set_learning_rate(opt, learning_rate(update, 0.0, warmup=4, d_model=8))
        tokens = torch.randint(0, 11, (4, 5))
        loss = nn.functional.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_train_state_resume_is_exact(tmp_path):
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    model = Tied()
    opt = make_optimizer(model, lr=1.0)
    _train(model, opt, 1, 3)
    path = tmp_path / "train_state.pt"
    save_train_state(path, optimizer=opt, scheduler=None, step=3, epoch=1, extra={"best": 1.5}, model=model)

    _train(model, opt, 4, 2)
    expected = (model.hidden.weight.clone(), torch.rand(3), random.random(), np.random.rand())

    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    fresh = Tied()
    opt2 = make_optimizer(fresh, lr=1.0)
    info = load_train_state(path, opt2, None, model=fresh)
    assert info == {"step": 3, "epoch": 1, "extra": {"best": 1.5}}
    assert opt2.param_groups[0]["lr"] == pytest.approx(inverse_sqrt_lr(3, warmup=4, d_model=8))  # update 3's
    assert fresh.out.weight is fresh.embed.weight
    _train(fresh, opt2, info["step"] + 1, 2)
    torch.testing.assert_close(fresh.hidden.weight, expected[0], rtol=0, atol=0)
    torch.testing.assert_close(torch.rand(3), expected[1], rtol=0, atol=0)
    assert random.random() == expected[2] and np.random.rand() == expected[3]
    assert _no_temp_files(tmp_path)


def test_train_state_is_weights_only_loadable(tmp_path):
    model = Tied()
    opt = make_optimizer(model, lr=1.0)
    path = tmp_path / "s.pt"
    save_train_state(path, optimizer=opt, scheduler=None, step=0, epoch=0)
    payload = torch.load(path, weights_only=True)
    assert set(payload) >= {"optimizer", "scheduler", "step", "epoch", "rng", "extra"}
    with pytest.raises(ValueError, match="holds no model weights"):
        load_train_state(path, opt, None, model=model)
    with pytest.raises(ValueError, match=r"extra\['config'\] is a Tied"):
        save_train_state(path, optimizer=opt, scheduler=None, step=0, epoch=0, extra={"config": model})


def test_average_weights_is_elementwise_mean(tmp_path):
    torch.manual_seed(0)
    a, b = Tied(), Tied()
    b.count.fill_(7)
    save_weights(a, tmp_path / "a.safetensors")
    save_weights(b, tmp_path / "b.safetensors")
    avg = average_weights([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    torch.testing.assert_close(avg["hidden.weight"], (a.hidden.weight + b.hidden.weight) / 2)
    assert avg["count"].dtype == torch.long and avg["count"].item() == 7
    merged = Tied()
    apply_weights(merged, avg)
    torch.testing.assert_close(merged.out.weight, (a.embed.weight + b.embed.weight) / 2)


def test_average_weights_errors(tmp_path):
    save_weights(Tied(vocab=11), tmp_path / "a.safetensors")
    save_weights(Tied(vocab=12), tmp_path / "b.safetensors")
    save_weights(nn.Linear(2, 2), tmp_path / "c.safetensors")
    with pytest.raises(ValueError, match=r"shape \(12, 6\) in .*b.safetensors but \(11, 6\)"):
        average_weights([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    with pytest.raises(ValueError, match="different keys"):
        average_weights([tmp_path / "a.safetensors", tmp_path / "c.safetensors"])
    with pytest.raises(ValueError, match="at least one"):
        average_weights([])


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "metrics" / "config.yaml"
    atomic_write_text(path, "a: 1\n")
    atomic_write_text(path, "a: 2\n")
    assert path.read_text() == "a: 2\n"
    assert _no_temp_files(path.parent)
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_failure_mid_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    atomic_write_text(path, "old\n")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert path.read_text() == "old\n"
    assert _no_temp_files(tmp_path)

    weights = tmp_path / "model.safetensors"
    save_weights(Tied(), weights)
    before = weights.read_bytes()

    def broken_save(model, filename, **kwargs):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_model", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_weights(Tied(), weights)
    assert weights.read_bytes() == before
    assert _no_temp_files(tmp_path)
