"""--device (transformer/devices.py): resolving a name on this machine, the precision of training for each
device kind, and moving a batch."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transformer.data.batching import SegmentBatch
from transformer.devices import available_devices, move_to, precision, resolve_device

ROOT = Path(__file__).resolve().parents[1]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")


def test_cpu_is_always_available_and_auto_takes_the_best_device_there_is():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "mps" if "mps" in available_devices() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_a_device_that_is_not_there_is_a_one_line_error_naming_it_and_what_is(name):
    with pytest.raises(ValueError, match=rf"^--device {name} is not available on this machine; available: cpu") as e:
        resolve_device(name)
    assert "\n" not in str(e.value)


def test_a_name_that_is_no_device_says_which_names_are():
    with pytest.raises(ValueError, match=r"--device gpu0 is not a device name; use auto, cpu, cuda, cuda:N or mps"):
        resolve_device("gpu0")


@pytest.mark.parametrize(("kind", "bf16", "supported", "expected"), [
    ("cpu", False, True, (None, False)),  # fp32 by default, as before
    ("cpu", True, True, (torch.bfloat16, False)),  # bf16 autocast on the CPU, as before
    ("cuda", False, True, (None, False)),
    ("cuda", False, False, (None, False)),
    ("cuda", True, True, (torch.bfloat16, False)),  # Ampere and later
    ("cuda", True, False, (torch.float16, True)),  # older GPUs: fp16 with loss scaling
    ("mps", False, True, (None, False)),
    ("mps", True, True, (torch.bfloat16, False)),
    ("mps", True, False, (None, False)),  # no fp16 without a scaler: fp32
    ("cpu", True, False, (None, False)),
])
def test_precision_follows_the_bf16_flag_and_the_device(kind, bf16, supported, expected):
    assert precision(kind, bf16, supported) == expected


def test_move_to_moves_every_tensor_of_a_batch_and_keeps_the_rest():
    batch = SegmentBatch(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long), 0)
    moved = move_to({"batch": batch, "ids": [torch.ones(1)], "n": 3}, torch.device("cpu"))
    assert isinstance(moved["batch"], SegmentBatch) and moved["batch"].n_tokens == 6
    assert torch.equal(moved["batch"].inputs, batch.inputs) and moved["n"] == 3


@no_cuda
def test_train_with_an_unavailable_device_fails_in_one_line_before_anything_is_written(tmp_path):
    command = [sys.executable, "-m", "transformer", "train", str(ROOT / "configs" / "vit-digits.yaml"), "--out",
               str(tmp_path / "run"), "--device", "cuda", "--set", "train.max_steps=1"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--device cuda is not available on this machine; available: cpu" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    from tests.corpus import lm_config, write_text_corpus
    from transformer.config import RunConfig
    from transformer.training.trainer import train

    root = tmp_path_factory.mktemp("lm")
    write_text_corpus(root, n_train=60)
    train(RunConfig.from_dict(lm_config(root, max_steps=1, eval_every=1)), root / "run", progress_bar=False,
          device="cpu")
    return root / "run"


def test_generate_and_evaluate_run_on_the_device_named_and_refuse_one_that_is_not_there(lm_dir, capsys):
    from transformer.cli import main

    assert main(["generate", "--model", str(lm_dir), "--prompt", "the", "--max-new-tokens", "3", "--device",
                 "cpu"]) == 0
    assert main(["evaluate", "--model", str(lm_dir), "--split", "valid", "--device", "auto"]) == 0
    assert "perplexity" in capsys.readouterr().out
    if not torch.cuda.is_available():
        for command in (["generate", "--prompt", "the"], ["evaluate", "--split", "valid"]):
            assert main([*command, "--model", str(lm_dir), "--device", "cuda"]) == 2
            error = capsys.readouterr().err
            assert error == "error: --device cuda is not available on this machine; available: cpu\n"


def test_a_model_loads_onto_the_device_named(lm_dir):
    from transformer.devices import model_device
    from transformer.inference import load_model_dir

    model, _, _ = load_model_dir(lm_dir, device="cpu")
    assert model_device(model) == torch.device("cpu")
