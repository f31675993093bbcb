"""A model directory's own names cannot lead outside it (issue #16, item 5): --weights, the checkpoints a
train_state.pt lists, the files an onnx_config.json names."""

import os

import pytest

from transformer.cli import main
from transformer.model_dir import inside


def test_a_name_inside_is_taken_and_one_that_leads_out_is_refused(tmp_path):
    (tmp_path / "model" / "checkpoints").mkdir(parents=True)
    assert inside(tmp_path / "model", "checkpoints/step-4.safetensors") == (
        tmp_path / "model" / "checkpoints" / "step-4.safetensors").resolve()
    os.symlink(tmp_path, tmp_path / "model" / "out")
    for name in ("../secret.safetensors", str(tmp_path / "secret.safetensors"), "out/secret.safetensors",
                 "checkpoints/../../x"):
        with pytest.raises(ValueError, match="leads outside the model directory"):
            inside(tmp_path / "model", name, "checkpoint")


def test_evaluate_with_weights_outside_the_directory_is_a_one_line_error(model_dir, capsys):
    assert main(["evaluate", "--model", str(model_dir), "--weights", "../model.safetensors"]) == 2
    err = capsys.readouterr().err
    assert "the weights file '../model.safetensors' leads outside the model directory" in err
    assert err.count("\n") == 1
