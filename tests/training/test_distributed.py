"""Training on several processes (transformer/training/distributed.py), each test launching its own: the README's
`torchrun --nproc_per_node 2 -m transformer train CONFIG` (as `python -m torch.distributed.run`, the same
program) with gloo on the CPU, compared with the single-process run, the reference. Dropout is 0: its draws
differ per rank, so only then can N processes equal one."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.corpus import run_config, write_corpus
from transformer.config import RunConfig
from transformer.training.trainer import train

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    # 3 micro-batches an epoch: with train.accumulate=2, update 2 is the epoch's last micro-batch alone, so
    # rank 1 has none of it and runs the weight-0 pass (trainer._update); update 3 starts epoch 1
    return write_corpus(tmp_path_factory.mktemp("corpus"), n_train=24)


def _tree(corpus: Path, **train_changes) -> dict:
    # adam_eps 1e-6: the key projections' biases have a gradient of exactly 0 in exact arithmetic (softmax
    # ignores a shift common to all keys), so what they get is rounding noise, ~1e-10, which Adam with its
    # default eps 1e-9 would blow up to steps of +-lr whose signs differ between any two summation orders.
    train = {"accumulate": 2, "threads": 1, "eval_every": 3, "log_every": 1, "max_steps": 3, "adam_eps": 1e-6}
    tree = run_config(corpus, **(train | train_changes))
    tree["model"]["dropout"] = 0.0  # dropout draws differ per rank (distributed.py)
    return tree


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(tree: dict, out: Path, *extra: str, nproc: int = 2) -> subprocess.Popen:
    config = out.parent / f"{out.name}.yaml"
    config.write_text(yaml.safe_dump(tree), encoding="utf-8")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "--monitor_interval", "0.2",
               "-m", "transformer", "train", str(config), "--out", str(out), "--no-progress", "--device", "cpu",
               *extra]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run(tree: dict, out: Path, *extra: str) -> str:
    process = _torchrun(tree, out, *extra)
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 0, output[-3000:]
    return output


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / f"step-{step}.safetensors")


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-5, msg=name)


def _losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [record["loss"] for record in map(json.loads, lines) if "loss" in record]


def test_two_processes_make_the_updates_of_one_accumulating_over_the_same_batches(corpus, tmp_path):
    """2 gloo processes, one micro-batch each, end 3 updates with the parameters (and logged losses) of one
    process accumulating over the same 2 micro-batches; only rank 0 wrote the run's files."""
    tree = _tree(corpus)
    _run(tree, tmp_path / "two")
    train(RunConfig.from_dict(tree), tmp_path / "one", progress_bar=False, device="cpu")
    _assert_same(_weights(tmp_path / "two", 3), _weights(tmp_path / "one", 3))
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), abs=2e-4)
    assert len(_losses(tmp_path / "two")) == 3  # one record per update: rank 1 logged nothing
    records = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if "loss" in r] == [0, 1, 1]  # update 2 ended epoch 0 (one micro-batch)
    assert (tmp_path / "two" / "model.safetensors").is_file() and (tmp_path / "two" / "loss.png").is_file()


def test_resuming_with_another_number_of_processes_continues_the_same_updates(corpus, tmp_path):
    """Update s consumes the same micro-batches at any world size: 2 updates on 2 processes resumed to 4 on one,
    and 2 on one resumed to 4 on 2 processes, equal 4 updates on one process straight."""
    _run(_tree(corpus, max_steps=2, eval_every=2), tmp_path / "resumed")
    train(RunConfig.from_dict(_tree(corpus, max_steps=4, eval_every=2)), tmp_path / "resumed", resume=True,
          progress_bar=False, device="cpu")
    train(RunConfig.from_dict(_tree(corpus, max_steps=4, eval_every=2)), tmp_path / "straight", progress_bar=False,
          device="cpu")
    _assert_same(_weights(tmp_path / "resumed", 4), _weights(tmp_path / "straight", 4))
    # and the other way: 2 updates on one process, resumed to 4 on 2 (rank 1 loads the state rank 0 wrote)
    train(RunConfig.from_dict(_tree(corpus, max_steps=2, eval_every=2)), tmp_path / "grown", progress_bar=False,
          device="cpu")
    _run(_tree(corpus, max_steps=4, eval_every=2), tmp_path / "grown", "--resume")
    _assert_same(_weights(tmp_path / "grown", 4), _weights(tmp_path / "straight", 4))


def _rank_pid(out: Path, rank: int) -> int | None:
    """The pid of the training process of rank `rank` writing into `out` (Linux /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(out).encode() in cmdline and f"RANK={rank}".encode() in environ and b"-m" in cmdline:
            if any(arg.endswith(b"torch.distributed.run") for arg in cmdline):
                continue  # the launcher itself
            return int(entry.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process in Linux's /proc")
def test_a_rank_that_dies_stops_the_whole_job_with_a_clear_error(corpus, tmp_path):
    """Rank 1 killed mid-run (SIGKILL): torchrun ends rank 0 and exits non-zero within 20 s, naming the rank
    and the signal, instead of rank 0 waiting for it forever."""
    out = tmp_path / "run"
    process = _torchrun(_tree(corpus, max_steps=100_000, eval_every=100_000, dist_timeout=15), out)
    try:
        deadline = time.monotonic() + 120
        while not (out / "train_state.pt").is_file() or _rank_pid(out, 1) is None:
            assert process.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        time.sleep(1.0)  # well into the updates
        os.kill(_rank_pid(out, 1), signal.SIGKILL)
        killed = time.monotonic()
        output, _ = process.communicate(timeout=60)
        assert time.monotonic() - killed < 20
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode != 0
    assert "rank: 1" in output and "SIGKILL" in output, output[-3000:]


def test_fsdp_shards_the_model_and_makes_the_updates_of_one_process(corpus, tmp_path):
    """train.parallel=fsdp (FSDP2 fully_shard, gloo): the same parameters after 3 updates as one process over
    the same micro-batches; the files are the single-file ones (rank 0 gathers the whole weights and optimizer
    state), and the run resumes sharded to the weights of a run never stopped."""
    tree = _tree(corpus)
    _run(tree, tmp_path / "fsdp", "--set", "train.parallel=fsdp")
    train(RunConfig.from_dict(tree), tmp_path / "one", progress_bar=False, device="cpu")
    _assert_same(_weights(tmp_path / "fsdp", 3), _weights(tmp_path / "one", 3))
    _assert_same(load_file(tmp_path / "fsdp" / "model.safetensors"), load_file(tmp_path / "one" / "model.safetensors"))
    assert _losses(tmp_path / "fsdp") == pytest.approx(_losses(tmp_path / "one"), abs=2e-4)
    _run(_tree(corpus, max_steps=5, eval_every=5), tmp_path / "fsdp", "--set", "train.parallel=fsdp", "--resume")
    train(RunConfig.from_dict(_tree(corpus, max_steps=5, eval_every=5)), tmp_path / "one", resume=True,
          progress_bar=False, device="cpu")
    _assert_same(_weights(tmp_path / "fsdp", 5), _weights(tmp_path / "one", 5))


@pytest.mark.parametrize(("key", "value", "message"), [
    ("dist_timeout", 0, r"train.dist_timeout=0 must be > 0 seconds, e.g. 1800"),
    ("parallel", "zero", r"train.parallel='zero' must be 'ddp' or 'fsdp'"),
])
def test_the_distributed_settings_are_checked_when_the_config_loads(corpus, key, value, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_dict(_tree(corpus, **{key: value}))
