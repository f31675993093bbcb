"""`transformer average-checkpoints`: the written file is the element-wise mean of the chosen checkpoint files,
which checkpoints are chosen, and the one-line errors."""

import json
import shutil

import pytest
import safetensors.torch
import torch

from tests.corpus import run_config, write_corpus
from transformer.cli import main
from transformer.config import RunConfig


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run that validated at steps 2, 4 and 6 and kept all three checkpoints (train.average_last: 3)."""
    from transformer.training.trainer import train

    corpus = write_corpus(tmp_path_factory.mktemp("corpus"))
    out = tmp_path_factory.mktemp("run") / "avg3"
    train(RunConfig.from_dict(run_config(corpus, max_steps=6, eval_every=2, average_last=3)), out,
          progress_bar=False)
    return out


def _mean(paths):
    """The element-wise mean of safetensors files, computed here independently of the command."""
    states = [safetensors.torch.load_file(str(p)) for p in paths]
    return {name: sum(state[name] for state in states) / len(states) for name in states[0]}


def _assert_mean(out, paths):
    written, expected = safetensors.torch.load_file(str(out)), _mean(paths)
    assert written.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(written[name], tensor, rtol=1e-6, atol=1e-7, msg=name)
    assert not all(torch.equal(written[n], safetensors.torch.load_file(str(paths[-1]))[n]) for n in written)


def _summary(capsys):
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("averaged ")
    return json.loads(out[-1])


def test_the_last_k_checkpoints_are_averaged_and_the_file_evaluates(run, capsys):
    steps = ["checkpoints/step-2.safetensors", "checkpoints/step-4.safetensors", "checkpoints/step-6.safetensors"]
    command = ["average-checkpoints", "--model", str(run)]
    assert main([*command, "--last", "2", "--out", str(run / "avg2.safetensors")]) == 0
    assert _summary(capsys)["checkpoints"] == steps[1:]
    _assert_mean(run / "avg2.safetensors", [run / s for s in steps[1:]])

    assert main([*command, "--out", str(run / "avg.safetensors")]) == 0
    summary = _summary(capsys)  # no --last: the run's train.average_last, 3
    assert summary["checkpoints"] == steps and summary["averaged"] == 3
    _assert_mean(run / "avg.safetensors", [run / s for s in steps])

    assert main(["evaluate", "--model", str(run), "--weights", "avg.safetensors", "--limit", "4", "--beam", "1"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 4


def test_without_train_state_the_step_files_are_taken_in_step_order(run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "train_state.pt").unlink()
    doubled = {k: v * 2 for k, v in safetensors.torch.load_file(str(copy / "checkpoints/step-2.safetensors")).items()}
    safetensors.torch.save_file(doubled, str(copy / "checkpoints/step-10.safetensors"))  # after step-6, not step-2
    (copy / "checkpoints/step-x.safetensors").write_bytes(b"")  # not a step-N file: ignored
    out = tmp_path / "avg.safetensors"
    assert main(["average-checkpoints", "--model", str(copy), "--last", "2", "--out", str(out)]) == 0
    assert _summary(capsys)["checkpoints"] == ["checkpoints/step-6.safetensors", "checkpoints/step-10.safetensors"]
    _assert_mean(out, [copy / "checkpoints/step-6.safetensors", copy / "checkpoints/step-10.safetensors"])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--last", "0"], "--last 0: average at least 1 checkpoint; pass --last K with K >= 1"),
        (["--last", "4"], "--last 4: {run} keeps only 3 checkpoint(s); pass --last 3 or fewer"),
        (["--out", "{run}/model.safetensors"], "would overwrite the run's own model.safetensors"),
        (["--out", "{run}/checkpoints/step-6.safetensors"], "would overwrite the run's own step-6.safetensors"),
        (["--out", "{tmp}/missing/avg.safetensors"], "--out {tmp}/missing/avg.safetensors: the directory "
                                                     "{tmp}/missing does not exist"),
        (["--out", "{tmp}"], "is a directory; name a file to write"),
    ],
)
def test_bad_values_are_one_line_errors_that_write_nothing(run, tmp_path, capsys, flags, message):
    before = {p: p.read_bytes() for p in run.rglob("*.safetensors")}
    flags = [f.format(run=run, tmp=tmp_path) for f in flags]
    out = ["--out", str(tmp_path / "avg.safetensors")] if "--out" not in flags else []
    assert main(["average-checkpoints", "--model", str(run), *flags, *out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message.format(run=run, tmp=tmp_path) in err
    assert {p: p.read_bytes() for p in run.rglob("*.safetensors")} == before
    assert not (tmp_path / "avg.safetensors").exists()


def test_a_run_without_averaging_needs_last_and_last_1_copies_its_checkpoint(model_dir, tmp_path, capsys):
    out = tmp_path / "avg.safetensors"
    assert main(["average-checkpoints", "--model", str(model_dir), "--out", str(out)]) == 2
    assert "has train.average_last=0 (off), so there is no default; pass --last K" in capsys.readouterr().err
    assert main(["average-checkpoints", "--model", str(model_dir), "--last", "1", "--out", str(out)]) == 0
    assert _summary(capsys)["checkpoints"] == ["checkpoints/step-4.safetensors"]
    written = safetensors.torch.load_file(str(out))
    checkpoint = safetensors.torch.load_file(str(model_dir / "checkpoints/step-4.safetensors"))
    assert written.keys() == checkpoint.keys() and all(torch.equal(written[k], checkpoint[k]) for k in written)


def test_no_checkpoints_and_names_leading_outside_are_refused(run, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run / "config.yaml", bare / "config.yaml")
    args = ["average-checkpoints", "--model", str(bare), "--last", "1", "--out", str(tmp_path / "avg.safetensors")]
    assert main(args) == 2
    assert f"{bare} has no checkpoints" in capsys.readouterr().err
    shutil.copy(run / "checkpoints/step-2.safetensors", tmp_path / "outside.safetensors")
    torch.save({"extra": {"progress": {"checkpoints": ["../outside.safetensors"]}}}, bare / "train_state.pt")
    assert main(args) == 2
    assert "the checkpoint '../outside.safetensors' leads outside the model directory" in capsys.readouterr().err
    torch.save({"extra": {"progress": {"checkpoints": ["checkpoints/step-8.safetensors"]}}}, bare / "train_state.pt")
    assert main(args) == 2
    assert "lists the checkpoint checkpoints/step-8.safetensors, which is missing" in capsys.readouterr().err
    assert not (tmp_path / "avg.safetensors").exists()
