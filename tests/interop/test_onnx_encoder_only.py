"""ONNX export of encoder-only models: onnxruntime gives the PyTorch model's hidden states, sentence embeddings
and logits (MLM or class) within 1e-4, with padding in the batch and a batch size and length the export did
not trace."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from tests.interop.test_hf_bert import batch  # noqa: E402
from transformer.api import load  # noqa: E402
from transformer.cli import main  # noqa: E402
from transformer.interop.onnx_encoder_only import OnnxEncoderOnly  # noqa: E402

TEXTS = ["the man went home.", "a woman wept by the river, and the child sat in the city.", "he spoke", "x"]
ATOL = 1e-4


@pytest.mark.parametrize("fixture", ["bert_dir", "classifier_dir"])
def test_onnxruntime_matches_pytorch(request, tmp_path, capsys, fixture):
    model_dir = request.getfixturevalue(fixture)
    assert main(["export-onnx", "--model", str(model_dir), "--out", str(tmp_path / "onnx")]) == 0
    assert "encoder_only.onnx" in capsys.readouterr().out
    ours = load(model_dir)
    tokens, real = batch(ours.tokenizer, TEXTS)  # (4, T): longer than the traced (2, 5), padded rows
    outputs = OnnxEncoderOnly(tmp_path / "onnx")(tokens)
    with torch.no_grad():
        states = ours.model.hidden_states(tokens)
        logits = ours.model.classify(tokens) if ours.task == "classify" else ours.model(tokens)
    vectors = ours.embed(TEXTS)
    assert np.allclose(outputs["hidden_states"][real.numpy()], states[real].numpy(), atol=ATOL)
    assert np.allclose(outputs["sentence_embedding"], vectors.numpy(), atol=ATOL)
    if ours.task == "classify":
        assert outputs["logits"].shape == (len(TEXTS), ours.config.model.n_classes)
        assert np.allclose(outputs["logits"], logits.numpy(), atol=ATOL)
    else:
        assert np.allclose(outputs["logits"][real.numpy()], logits[real].numpy(), atol=ATOL)
    config = json.loads((tmp_path / "onnx" / "onnx_config.json").read_text())
    assert (config["task"], config["pad_id"]) == (ours.task, ours.tokenizer.pad_id)


def test_onnx_runner_refuses_ids_outside_the_vocabulary(bert_dir, tmp_path):
    assert main(["export-onnx", "--model", str(bert_dir), "--out", str(tmp_path / "onnx")]) == 0
    runner = OnnxEncoderOnly(tmp_path / "onnx")
    with pytest.raises(ValueError, match="token ids must be in 0.."):
        runner(np.array([[1, runner.config["vocab_size"], 2]]))
