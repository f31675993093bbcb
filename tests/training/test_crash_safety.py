"""Crash safety (issue #16, item 1): a run killed with SIGKILL at any moment, and resumed, ends as a run never
stopped; every binary file is checked against the hash its manifest recorded.

The kill test is an end-to-end test of a few tens of seconds: it starts `transformer train` in subprocesses.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.corpus import run_config, write_corpus
from transformer.config import RunConfig
from transformer.inference import load_model_dir
from transformer.safe_files import MANIFEST_FILE, CorruptFileError, atomic_path, sha256_of, verify
from transformer.training.trainer import train

ROOT = Path(__file__).resolve().parents[2]
MAX_STEPS, EVAL_EVERY = 40, 5
# Runs `transformer` with os.replace made to kill the process (SIGKILL) on its K-th rename onto a path ending
# in NAME: the write stops between the temporary file and the rename, as a power cut or an OOM kill would.
KILL_ON_RENAME = """
import os, signal, sys
name, k = sys.argv[1], int(sys.argv[2])
real_replace, seen = os.replace, [0]
def replace(src, dst, *args, **kwargs):
    if str(dst).endswith(name):
        seen[0] += 1
        if seen[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace
from transformer.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def _tree(corpus) -> dict:
    return run_config(corpus, max_steps=MAX_STEPS, eval_every=EVAL_EVERY, log_every=1, average_last=3, threads=1)


def _train_command(config_file: Path, out: Path) -> list[str]:
    resume = ["--resume"] if (out / "train_state.pt").exists() else []  # a run killed before its first state
    return ["-v", "train", str(config_file), "--out", str(out), "--no-progress", *resume]


def _environment() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}


def _run_and_kill(command: list[str], kill_after_step: int, delay: float) -> None:
    """Start `command`, and SIGKILL it `delay` seconds after it logs a step >= `kill_after_step`."""
    process = subprocess.Popen(command, cwd=ROOT, env=_environment(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    reached = threading.Event()

    def watch() -> None:
        for line in process.stderr:
            found = re.search(r"\{'step': (\d+)", line)
            if found and int(found.group(1)) >= kill_after_step:
                reached.set()

    threading.Thread(target=watch, daemon=True).start()
    assert reached.wait(timeout=120), f"the run never reached step {kill_after_step}"
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL, "the run ended before it was killed"


def _run_to_the_end(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, env=_environment(), capture_output=True, text=True, timeout=300)


def _saved_step(out: Path) -> int:
    return torch.load(out / "train_state.pt", weights_only=True)["step"]


def _without_timings(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("minutes", "tok_s")} for r in records]


def test_a_run_killed_seven_times_ends_as_a_run_never_stopped(corpus, tmp_path):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(RunConfig.from_dict(_tree(corpus)).to_yaml(), encoding="utf-8")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    train(RunConfig.from_dict(_tree(corpus)), straight, progress_bar=False)

    rng = random.Random(16)
    for target in sorted(rng.sample(range(1, MAX_STEPS - 2 * EVAL_EVERY), 5)):  # kills at seeded points
        _run_and_kill([sys.executable, "-m", "transformer", *_train_command(config_file, killed)], target,
                      delay=rng.uniform(0.0, 0.05))
    for name in ("checkpoints/step-{}.safetensors", "train_state.pt"):  # kills inside a write, before its rename
        next_eval = (_saved_step(killed) // EVAL_EVERY + 1) * EVAL_EVERY
        wrapped = [sys.executable, "-c", KILL_ON_RENAME, name.format(next_eval), "1",
                   *_train_command(config_file, killed)]
        assert subprocess.run(wrapped, cwd=ROOT, env=_environment(), capture_output=True,
                              timeout=300).returncode == -signal.SIGKILL
        assert list(killed.rglob(".*.tmp")), "the killed write left its temporary file"
    finished = _run_to_the_end([sys.executable, "-m", "transformer", *_train_command(config_file, killed)])
    assert finished.returncode == 0, finished.stderr[-2000:]

    assert not list(killed.rglob(".*.tmp"))
    records = [json.loads(line) for line in (killed / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, MAX_STEPS + 1))  # none lost, none twice
    assert [r["step"] for r in records if "best_step" in r] == list(range(EVAL_EVERY, MAX_STEPS + 1, EVAL_EVERY))
    reference = [json.loads(line) for line in (straight / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert _without_timings(records) == _without_timings(reference)  # the same losses, lr, BLEU, averaging
    for name in ("model.safetensors", f"checkpoints/step-{MAX_STEPS}.safetensors"):
        ours, theirs = load_file(killed / name), load_file(straight / name)
        assert ours.keys() == theirs.keys()
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)
    model, _, _ = load_model_dir(killed)  # a valid model directory, verified against its manifest
    assert not model.training


# ------------------------------------------------------------------------------------------ manifest


@pytest.fixture
def run_dir(corpus, tmp_path):
    out = tmp_path / "run"
    train(RunConfig.from_dict(run_config(corpus, max_steps=6, eval_every=2, average_last=2)), out,
          progress_bar=False)
    return out


def test_the_manifest_records_the_hash_of_every_binary_file(run_dir):
    files = json.loads((run_dir / MANIFEST_FILE).read_text())["files"]
    assert files == {name: sha256_of(run_dir / name) for name in ("model.safetensors", "train_state.pt")}
    checkpoints = json.loads((run_dir / "checkpoints" / MANIFEST_FILE).read_text())
    on_disk = sorted(p.name for p in (run_dir / "checkpoints").glob("*.safetensors"))
    assert sorted(checkpoints["files"]) == on_disk == ["step-4.safetensors", "step-6.safetensors"]  # pruned ones go
    assert checkpoints["pending"] == {}


def test_a_corrupt_weights_file_is_named_with_the_last_good_checkpoint(run_dir):
    path = run_dir / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last tensor: safetensors itself would load it
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=r"model\.safetensors does not match the SHA-256 recorded in .*"
                                               r"manifest\.json.*the last good checkpoint is .*step-6\.safetensors"):
        load_model_dir(run_dir)


def test_a_truncated_train_state_cannot_be_resumed_from(corpus, run_dir):
    path = run_dir / "train_state.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptFileError, match=r"train_state\.pt does not match .*step-6\.safetensors \(weights only"):
        train(RunConfig.from_dict(run_config(corpus, max_steps=8, eval_every=2, average_last=2)), run_dir,
              resume=True, progress_bar=False)


def test_a_directory_without_a_manifest_loads_with_a_warning(run_dir, caplog):
    (run_dir / MANIFEST_FILE).unlink()  # as older runs and other tools wrote them
    with caplog.at_level("WARNING"):
        model, _, _ = load_model_dir(run_dir)
    assert any("loading it unverified" in r.message for r in caplog.records)
    assert model is not None


def test_a_write_killed_between_hashing_and_renaming_leaves_a_file_that_verifies(tmp_path, monkeypatch):
    path = tmp_path / "weights.bin"
    with atomic_path(path, record=True) as tmp:
        tmp.write_bytes(b"old")

    real_replace = os.replace

    def killed_rename(src, dst):
        if Path(dst) == path:
            raise KeyboardInterrupt  # the process stops here: the new hash is recorded as pending, the file is old
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_rename)
    with pytest.raises(KeyboardInterrupt), atomic_path(path, record=True) as tmp:
        tmp.write_bytes(b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    verify(path)  # the old file still matches
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert manifest["pending"]["weights.bin"] != manifest["files"]["weights.bin"]
    with atomic_path(path, record=True) as tmp:
        tmp.write_bytes(b"new")
    assert json.loads((tmp_path / MANIFEST_FILE).read_text())["pending"] == {}
    verify(path)


def test_files_are_written_with_the_mode_open_gives_them(tmp_path):
    umask = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "weights.bin", record=True) as tmp:
            tmp.write_bytes(b"x")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(umask)
    assert (tmp_path / "weights.bin").stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777


def test_tensorboard_scalars_match_metrics_jsonl(corpus, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    train(RunConfig.from_dict(run_config(corpus, max_steps=4, eval_every=2, log_every=1, tensorboard=True)), out,
          progress_bar=False)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    logged = [(s.step, s.value) for s in events.Scalars("loss")]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    expected = [(r["step"], r["loss"]) for r in records if "loss" in r]
    assert [step for step, _ in logged] == [step for step, _ in expected] == [1, 2, 3, 4]
    assert [value for _, value in logged] == pytest.approx([value for _, value in expected], rel=1e-6)
    assert [s.step for s in events.Scalars("valid_bleu")] == [2, 4]


def test_checkpoints_are_verified_before_they_are_averaged(run_dir):
    from transformer.model_dir import average_weights

    path = run_dir / "checkpoints" / "step-4.safetensors"
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CorruptFileError, match=r"step-4\.safetensors does not match"):
        average_weights([path, run_dir / "checkpoints" / "step-6.safetensors"])
