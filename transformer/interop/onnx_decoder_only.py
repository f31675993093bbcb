"""Export a decoder-only model (GPT: task lm) to ONNX as one graph with its KV cache, and run it with onnxruntime.

`export_decoder_only(model_dir, out_dir)` (`transformer export-onnx` on a decoder-only model directory) writes:

    decoder_only.onnx  the prompt pass (P = 0, T = the prompt's length), then one call per generated token
                       (T = 1, the cache of the P earlier positions given back)
    onnx_config.json   file, input/output names, n_layers, n_heads, d_head, vocab size, special ids, opset,
                       max_length (written last: a directory without it holds no complete export)
    tokenizer.json     the model directory's tokenizer

Shapes: B batch, T new positions, P cached positions, H heads, Dh head dim, V vocab; i = 0 .. n_layers - 1.
B, T and P are dynamic, P + T <= max_length (the learned position table is exported with the graph).

      in   tokens           int64 (B, T)           new ids (a prompt: <bos> first), right-padded with pad_id
           past_key_i       float (B, H, P, Dh)    self-attention keys and values of the P earlier positions;
           past_value_i     float (B, H, P, Dh)    arrays of shape (B, H, 0, Dh) for the prompt pass
      out  logits           float (B, T, V)        next-token logits at each new position
           present_key_i    float (B, H, P+T, Dh)  past_key_i with the new positions appended: the next
           present_value_i  float (B, H, P+T, Dh)  call's past_key_i / past_value_i

The graph wraps the model's own `hidden_states` and output projection over a StackCache built from the input
tensors, so every model option is exported as it runs in PyTorch. `OnnxDecoderOnly(out_dir)` holds it in an
onnxruntime session; `onnx_greedy_generate` continues a prompt token by token, as `transformer generate
--top-k 1` (decoding.sampling.sample with top_k=1) does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from transformer.decoding.protocol import banned_ids
from transformer.interop.onnx import DEFAULT_OPSET, _kv_names, _quiet_exporter, check_export, require
from transformer.nn.kv_cache import KVCache, StackCache
from transformer.safe_files import atomic_write_text

GRAPH_FILE, CONFIG_FILE, FORMAT = "decoder_only.onnx", "onnx_config.json", "transformer-onnx-decoder-only/1"
KV = tuple[np.ndarray, np.ndarray]  # keys, values: (B, H, L, Dh) each


class _DecoderOnlyGraph(nn.Module):
    """(tokens, past) -> (logits, present), through the model's own code."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, past: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        cache = StackCache([KVCache(k=keys, v=values) for keys, values in past])  # unbuffered: concatenates
        logits = self.model.output_proj(self.model.hidden_states(tokens, cache))  # (B, T, V)
        return logits, [(layer.k, layer.v) for layer in cache.layers]  # (B, H, P + T, Dh) each


def export_decoder_only(
    model_dir: str | Path, out_dir: str | Path, *, opset: int = DEFAULT_OPSET, max_length: int | None = None,
    weights: str = "model.safetensors",
) -> dict[str, Any]:
    """Export decoder-only `model_dir` into `out_dir` (see the module docstring); returns the config written.
    max_length (positions: prompt and generated tokens) defaults to the model's max_positions."""
    from transformer.inference import load_model_dir

    check_export(opset)
    model, tokenizer, run = load_model_dir(model_dir, weights)
    m = run.model
    learned = m.positional == "learned"
    limit = m.max_positions if max_length is None else max_length
    if not 2 <= limit or (learned and limit > m.max_positions):
        raise ValueError(f"max_length={limit}: use 2..{m.max_positions if learned else 'any'} (the positions a "
                         "prompt and its continuation take; model.max_positions bounds a learned table)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG_FILE).unlink(missing_ok=True)  # an interrupted export leaves no config behind
    n_layers = m.n_layers
    config = {
        "format": FORMAT, "file": GRAPH_FILE, "task": run.task, "opset": opset, "max_length": limit,
        "n_layers": n_layers, "n_heads": m.n_heads, "d_head": m.d_head, "vocab_size": m.tgt_vocab_size,
        "pad_id": m.pad_id, "bos_id": m.bos_id, "eos_id": m.eos_id, "torch": torch.__version__,
        "inputs": ["tokens", *_kv_names("past", n_layers)], "outputs": ["logits", *_kv_names("present", n_layers)],
    }
    _export_graph(model.eval(), out_dir / GRAPH_FILE, config)
    tokenizer.save(out_dir)
    atomic_write_text(out_dir / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    return config


def _export_graph(model: nn.Module, path: Path, config: dict[str, Any]) -> None:
    """Trace on B=2, T=4, P=3 with B, T and P dynamic."""
    n_layers, limit = config["n_layers"], config["max_length"]
    batch = torch.export.Dim("batch", min=1)
    length = torch.export.Dim("length", min=1, max=limit)
    past_len = torch.export.Dim("past_len", min=0, max=limit - 1)
    tokens = torch.full((2, 4), config["eos_id"], dtype=torch.long)  # (B, T)
    shape = (2, config["n_heads"], 3, config["d_head"])
    past = [(torch.zeros(shape), torch.zeros(shape)) for _ in range(n_layers)]
    past_shape = {0: batch, 2: past_len}
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    with torch.no_grad(), _quiet_exporter():
        torch.onnx.export(
            _DecoderOnlyGraph(model).eval(), (tokens, past), str(path), dynamo=True, opset_version=config["opset"],
            dynamic_shapes={"tokens": {0: batch, 1: length}, "past": [(past_shape, past_shape)] * n_layers},
            input_names=config["inputs"], output_names=config["outputs"], external_data=n_bytes > 1.5e9,
            verbose=False,
        )


class OnnxDecoderOnly:
    """An export_decoder_only directory in an onnxruntime session: `step(tokens, past)` -> (logits, present)."""

    def __init__(self, export_dir: str | Path, providers: Sequence[str] | None = None):
        ort = require("onnxruntime", "running an ONNX export")
        export_dir = Path(export_dir)
        path = export_dir / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {export_dir} holds no complete ONNX export (write one with "
                                    f"`transformer export-onnx --model DIR --out {export_dir}`)")
        self.config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if self.config.get("format") != FORMAT:
            raise ValueError(f"{path} is not a decoder-only export (format {self.config.get('format')!r}); "
                             "export a decoder-only model directory with `transformer export-onnx`")
        self.session = ort.InferenceSession(str(export_dir / self.config["file"]),
                                            providers=list(providers or ["CPUExecutionProvider"]))

    def empty_past(self, batch: int) -> list[KV]:
        """The cache before the prompt pass: P = 0, (B, H, 0, Dh) each."""
        shape = (batch, self.config["n_heads"], 0, self.config["d_head"])
        return [(np.zeros(shape, np.float32), np.zeros(shape, np.float32)) for _ in range(self.config["n_layers"])]

    def step(self, tokens: np.ndarray | Tensor, past: list[KV]) -> tuple[np.ndarray, list[KV]]:
        """Logits (B, T, V) of the new `tokens` (B, T) after the cached positions `past`, and the grown cache.
        Bad ids, a wrong number of layers or more than max_length positions are a ValueError."""
        c = self.config
        ids = np.asarray(tokens, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[1] < 1:
            raise ValueError(f"tokens of shape {ids.shape}: need (batch, length) with length >= 1")
        if ids.min() < 0 or ids.max() >= c["vocab_size"]:
            raise ValueError(f"token ids must be in 0..{c['vocab_size'] - 1}, got {ids.min()}..{ids.max()}")
        if len(past) != c["n_layers"]:
            raise ValueError(f"got {len(past)} (keys, values) pairs for {c['n_layers']} layers; pass one per layer")
        if past[0][0].shape[2] + ids.shape[1] > c["max_length"]:
            raise ValueError(f"{past[0][0].shape[2]} cached + {ids.shape[1]} new positions exceed max_length="
                             f"{c['max_length']} of this export; re-export with a larger --max-length")
        feeds = {"tokens": ids}
        for i, (keys, values) in enumerate(past):
            feeds[f"past_key_{i}"], feeds[f"past_value_{i}"] = keys, values
        logits, *present = self.session.run(c["outputs"], feeds)
        return logits, [(present[i], present[i + 1]) for i in range(0, len(present), 2)]


def onnx_greedy_generate(model: OnnxDecoderOnly, prompt: Sequence[int], max_new_tokens: int) -> list[int]:
    """The most probable next token, step by step after `prompt` (its ids, <bos> first), until <eos> (kept,
    last) or max_new_tokens: the tokens `sample(..., top_k=1)` yields. PAD and BOS are never produced."""
    c = model.config
    if not prompt or max_new_tokens < 1:
        raise ValueError(f"need a prompt of at least one id (<bos>) and max_new_tokens >= 1, got {len(prompt)} "
                         f"ids and {max_new_tokens}")
    banned = banned_ids(c["pad_id"], c["bos_id"], c["eos_id"])
    tokens, past, out = np.asarray([list(prompt)], dtype=np.int64), model.empty_past(1), []
    for _ in range(max_new_tokens):
        logits, past = model.step(tokens, past)
        scores = logits[0, -1].astype(np.float32)  # (V,)
        scores[banned] = -np.inf
        out.append(int(scores.argmax()))
        if out[-1] == c["eos_id"]:
            break
        tokens = np.asarray([[out[-1]]], dtype=np.int64)
    return out
