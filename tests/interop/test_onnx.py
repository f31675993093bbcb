"""ONNX export: onnxruntime equals PyTorch (encoder, one decoder step with a KV cache, greedy decoding)."""

import contextlib
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from transformer.cli import main
from transformer.config import ModelConfig, RunConfig
from transformer.data.tokenizer import train_bpe
from transformer.decoding import greedy_search
from transformer.inference import load_model_dir
from transformer.interop.onnx import export_onnx
from transformer.interop.onnx_runtime import OnnxSeq2Seq, onnx_greedy_search, pad_batch
from transformer.model_dir import save_weights
from transformer.models import build_model
from transformer.nn.masks import padding_mask

LINES = ["im anfang war das wort", "und das wort war bei gott", "in the beginning was the word",
         "and the word was with god", "licht und wasser, himmel und erde"]
SOURCES = ["das wort war bei gott und das licht", "und", "im anfang", "himmel und erde, wasser und licht war"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny random model directory, exported with `transformer export-onnx` (once for the whole module)."""
    torch.manual_seed(0)
    model_dir, out = tmp_path_factory.mktemp("model"), tmp_path_factory.mktemp("exported") / "onnx"
    tokenizer = train_bpe(LINES, vocab_size=300, min_frequency=1)
    tokenizer.save(model_dir)
    model_config = {"preset": "tiny", "src_vocab_size": tokenizer.vocab_size, "tgt_vocab_size": tokenizer.vocab_size,
                    "tie_output": False}
    config = RunConfig.from_dict({"model": model_config, "train": {"max_steps": 1},
                                  "data": {"corpus": "files", "train_src": "train.src", "train_tgt": "train.tgt"}})
    (model_dir / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    model = build_model(config.model)
    with torch.no_grad():  # weights far from the initialisation, so greedy outputs vary from token to token
        for name, weight in model.named_parameters():
            if "norm" not in name:
                weight.normal_(0.0, 0.1)
        model.output_proj.weight[config.model.eos_id] *= 7  # and EOS likely enough to end some outputs early
    save_weights(model, model_dir / "model.safetensors")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["export-onnx", "--model", str(model_dir), "--out", str(out)])
    assert code == 0
    return model_dir, out, stdout.getvalue()


@pytest.fixture(scope="module")
def models(exported):
    model_dir, out, _ = exported
    model, tokenizer, _ = load_model_dir(model_dir)
    return model, tokenizer, OnnxSeq2Seq(out, threads=1)


def test_export_onnx_command_writes_both_graphs_their_config_and_the_tokenizer(exported):
    _, out, printed = exported
    assert {p.name for p in out.iterdir()} == {"encoder.onnx", "decoder.onnx", "onnx_config.json", "tokenizer.json"}
    lines = printed.strip().splitlines()
    assert "src -> memory, cross_{key,value}_{0..1}" in lines[0]
    assert "-> logits, present_{key,value}_{0..1}" in lines[1]
    assert json.loads(lines[-1]) == {"out": str(out), "opset": 18, "n_layers": 2, "max_length": 1024}
    config = json.loads((out / "onnx_config.json").read_text())
    assert config["decoder"]["inputs"][:4] == ["tokens", "src_mask", "past_key_0", "past_value_0"]
    assert (config["pad_id"], config["bos_id"], config["eos_id"]) == (0, 1, 2)


def test_export_tokenizer_encodes_like_the_model_directory(models):
    _, tokenizer, graphs = models
    exported = graphs.tokenizer()
    assert (exported.pad_id, exported.bos_id, exported.eos_id) == (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id)
    assert exported.encode_batch(SOURCES, add_special_tokens=True) == tokenizer.encode_batch(SOURCES)


def test_graphs_have_dynamic_batch_source_and_past_lengths(models):
    graphs = models[2]
    shapes = {i.name: i.shape for s in (graphs.encoder, graphs.decoder) for i in (*s.get_inputs(), *s.get_outputs())}
    assert shapes["src"] == ["batch", "src_len"]
    assert shapes["cross_key_1"] == ["batch", 4, "src_len", 16]
    assert shapes["past_value_0"] == ["batch", 4, "past_len", 16]
    assert shapes["present_value_0"] == ["batch", 4, "past_len + 1", 16]
    assert shapes["logits"] == ["batch", 1, models[1].vocab_size]


def _close(actual: np.ndarray, expected: torch.Tensor) -> None:
    torch.testing.assert_close(torch.from_numpy(actual), expected, atol=1e-4, rtol=0)


def test_onnxruntime_equals_pytorch_with_padding_and_a_past(models):
    model, tokenizer, graphs = models
    src = torch.from_numpy(pad_batch([*tokenizer.encode_batch(SOURCES), []], tokenizer.pad_id))  # (B, S)
    assert src.size(0) == 5 and (src == tokenizer.pad_id).any()  # padded rows, one of them all padding
    src_mask = padding_mask(src, tokenizer.pad_id)  # (B, 1, 1, S)
    prefix = torch.randint(4, tokenizer.vocab_size, (src.size(0), 5))  # (B, 5)
    prefix[:, 0] = tokenizer.bos_id
    with torch.no_grad():
        memory = model.encode(src, src_mask)  # (B, S, D)
        first_logits, cache = model.decode_step(prefix[:, :1], memory, src_mask)  # P = 0
        _, cache = model.decode_step(prefix[:, 1:4], memory, src_mask, cache)  # P = 4
        past = [(own.k.numpy().copy(), own.v.numpy().copy()) for own, _ in cache.layers]
        logits, cache = model.decode_step(prefix[:, 4:], memory, src_mask, cache)  # (B, 1, V), P = 5

    ort_memory, cross = graphs.encode(src.numpy())
    _close(ort_memory, memory)
    for (keys, values), (_, expected) in zip(cross, cache.layers, strict=True):
        _close(keys, expected.k)
        _close(values, expected.v)
    mask = src_mask[:, 0, 0].numpy()  # (B, S)
    ort_first, _ = graphs.decode_step(prefix[:, :1].numpy(), mask, graphs.empty_past(src.size(0)), cross)
    _close(ort_first, first_logits)
    ort_logits, present = graphs.decode_step(prefix[:, 4:].numpy(), mask, past, cross)
    _close(ort_logits, logits)
    for (keys, values), (expected, _) in zip(present, cache.layers, strict=True):
        assert keys.shape[2] == 5
        _close(keys, expected.k)
        _close(values, expected.v)


def test_greedy_through_onnxruntime_gives_the_tokens_of_greedy_search(models):
    model, tokenizer, graphs = models
    sources = tokenizer.encode_batch(SOURCES)
    assert len({len(ids) for ids in sources}) == len(sources)  # different lengths, so different length limits
    src = pad_batch(sources, tokenizer.pad_id)
    ids = dict(pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id)
    expected = greedy_search(model, torch.from_numpy(src), max_len_a=1.0, max_len_b=3, **ids)
    assert len({token for tokens in expected for token in tokens}) > 3  # not one token repeated
    stopped = [len(tokens) < len(ids) + 3 for tokens, ids in zip(expected, sources, strict=True)]
    assert any(stopped) and not all(stopped)  # some outputs end with EOS, the others at their length limit
    assert onnx_greedy_search(graphs, src, max_len_a=1.0, max_len_b=3) == expected
    assert onnx_greedy_search(graphs, sources, max_len_a=1.0, max_len_b=3) == expected  # id lists padded here
    alone = [onnx_greedy_search(graphs, [s], max_len_a=1.0, max_len_b=3)[0] for s in sources]
    assert alone == expected
    assert onnx_greedy_search(graphs, sources, max_new_tokens=2) == greedy_search(
        model, torch.from_numpy(src), max_new_tokens=2, **ids)


def test_missing_model_directory_and_missing_packages_give_clear_errors(tmp_path, monkeypatch, capsys):
    assert main(["export-onnx", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "is not a model directory" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="holds no complete ONNX export"):
        OnnxSeq2Seq(tmp_path)
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    assert main(["export-onnx", "--model", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "'onnxscript', which is not installed: run `pip install 'transformer[onnx]'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ModuleNotFoundError, match="pip install onnx onnxscript onnxruntime"):
        OnnxSeq2Seq(tmp_path)


def test_bad_inputs_are_caught_before_onnxruntime_runs(models, tmp_path):
    _, tokenizer, graphs = models
    size = tokenizer.vocab_size
    with pytest.raises(ValueError, match=f"token id {size} in src is out of range for a vocabulary of size {size}"):
        onnx_greedy_search(graphs, [[5, size]])
    with pytest.raises(ValueError, match="token id -1 in tokens is out of range"):
        graphs.decode_step(np.array([[-1]]), np.ones((1, 2), bool), graphs.empty_past(1), graphs.encode([[5, 6]])[1])
    with pytest.raises(ValueError, match="more than max_length=1024 of this export"):
        onnx_greedy_search(graphs, [[5, 6]], max_new_tokens=2000)
    learned = build_model(ModelConfig.preset("tiny", src_vocab_size=40, tgt_vocab_size=40, positional="learned",
                                             max_positions=16))
    with pytest.raises(ValueError, match=r"max_length=32 is more positions than the model has.*--max-length"):
        export_onnx(learned, tmp_path, bos_id=1, eos_id=2, max_length=32)
    with pytest.raises(ValueError, match=r"opset=23 is not supported: use 18..22"):
        export_onnx(learned, tmp_path, bos_id=1, eos_id=2, opset=23)


def test_the_package_imports_without_onnx():
    blocked = "import sys; sys.modules.update(onnx=None, onnxscript=None, onnxruntime=None); "
    code = blocked + "import transformer, transformer.cli, transformer.interop.onnx, transformer.interop.onnx_runtime"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
