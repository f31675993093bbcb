"""ONNX export of a decoder-only model with its KV cache (interop/onnx_decoder_only.py): onnxruntime equals
PyTorch on a prompt pass with padding and on cached steps, and greedy generation gives `generate`'s tokens.

The model is a small GPT-2 imported from transformers (tests/interop/test_hf_gpt2.py builds it), so the graph
carries pre-LN layers, gelu_new, learned positions and the <pad> row with its output bias."""

import json
from contextlib import redirect_stdout
from io import StringIO

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytest.importorskip("transformers")

from tests.corpus import write_text_corpus  # noqa: E402
from tests.interop.test_hf_gpt2 import PROMPTS, _batch, _save_gpt2  # noqa: E402
from transformer.api import load  # noqa: E402
from transformer.cli import main  # noqa: E402
from transformer.inference import load_model_dir  # noqa: E402
from transformer.interop import import_hf  # noqa: E402
from transformer.interop.onnx_decoder_only import OnnxDecoderOnly, onnx_greedy_generate  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(our model directory, its `transformer export-onnx` directory, the command's JSON line)."""
    root = tmp_path_factory.mktemp("gpt2")
    (root / "text").mkdir()
    import_hf(_save_gpt2(root / "hf", write_text_corpus(root / "text")), root / "ours")
    out = root / "onnx"
    printed = StringIO()
    with redirect_stdout(printed):
        assert main(["export-onnx", "--model", str(root / "ours"), "--out", str(out)]) == 0
    return root / "ours", out, json.loads(printed.getvalue().strip().splitlines()[-1])


def test_export_writes_the_graph_its_config_and_the_tokenizer(exported):
    model_dir, out, printed = exported
    config = json.loads((out / "onnx_config.json").read_text())
    assert printed["max_length"] == config["max_length"] == 64  # the learned table's size
    assert (out / "decoder_only.onnx").is_file() and (out / "tokenizer.json").is_file()
    assert config["outputs"][:3] == ["logits", "present_key_0", "present_value_0"]
    assert (config["pad_id"], config["eos_id"]) == (load(model_dir).tokenizer.pad_id, load(model_dir).tokenizer.eos_id)


def test_prompt_pass_with_padding_and_cached_steps_equal_pytorch(exported):
    model_dir, out, _ = exported
    model, tok, _ = load_model_dir(model_dir)
    session = OnnxDecoderOnly(out)
    rows = [[tok.bos_id, *tok.encode(p)] for p in PROMPTS]
    ids, mask = _batch(rows, tok.pad_id)
    logits, past = session.step(ids.numpy(), session.empty_past(len(rows)))
    with torch.no_grad():
        expected = model(ids)
    real = mask.bool().numpy()
    np.testing.assert_allclose(logits[real], expected.numpy()[real], atol=1e-4, rtol=1e-4)
    # Cached steps: one prompt, then three tokens one at a time, against a full pass over all of it.
    prompt, more = rows[2], [5, 17, 42]
    _, past = session.step(np.array([prompt]), session.empty_past(1))
    for i, token in enumerate(more):
        step_logits, past = session.step(np.array([[token]]), past)
        assert past[0][0].shape[2] == len(prompt) + i + 1
        with torch.no_grad():
            full = model(torch.tensor([prompt + more[: i + 1]]))[0, -1]
        np.testing.assert_allclose(step_logits[0, -1], full.numpy(), atol=1e-4, rtol=1e-4)


def test_greedy_through_onnxruntime_gives_generate_tokens(exported):
    model_dir, out, _ = exported
    bundle, session = load(model_dir), OnnxDecoderOnly(out)
    tok = bundle.tokenizer
    for prompt in PROMPTS:
        ours = [int(step[0]) for step in bundle.generate_tokens(prompt, max_new_tokens=12, top_k=1)]
        assert onnx_greedy_generate(session, [tok.bos_id, *tok.encode(prompt)], 12) == ours, prompt


def test_bad_inputs_are_caught_before_onnxruntime_runs(exported):
    session = OnnxDecoderOnly(exported[1])
    vocab = session.config["vocab_size"]
    with pytest.raises(ValueError, match=f"token ids must be in 0..{vocab - 1}"):
        session.step(np.array([[vocab]]), session.empty_past(1))
    with pytest.raises(ValueError, match="exceed max_length=64"):
        session.step(np.zeros((1, 65), dtype=np.int64), session.empty_past(1))
    with pytest.raises(ValueError, match="pairs for 2 layers"):
        session.step(np.zeros((1, 1), dtype=np.int64), session.empty_past(1)[:1])


def test_a_model_trained_by_us_exports_too(lm_dir, tmp_path):
    """conftest's lm_dir (post-LN, ReLU, embeddings scaled by sqrt(d_model)): prompt-pass logits and greedy
    tokens through onnxruntime equal PyTorch's."""
    assert main(["export-onnx", "--model", str(lm_dir), "--out", str(tmp_path / "onnx")]) == 0
    bundle, session = load(lm_dir), OnnxDecoderOnly(tmp_path / "onnx")
    tok = bundle.tokenizer
    prompt = [tok.bos_id, *tok.encode("the king went")]
    logits, _ = session.step(np.array([prompt]), session.empty_past(1))
    with torch.no_grad():
        np.testing.assert_allclose(logits[0], bundle.model(torch.tensor([prompt]))[0].numpy(), atol=1e-4, rtol=1e-4)
    ours = [int(step[0]) for step in bundle.generate_tokens("the king went", max_new_tokens=10, top_k=1)]
    assert onnx_greedy_generate(session, prompt, 10) == ours
