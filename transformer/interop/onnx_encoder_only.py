"""Export an encoder-only model (BERT: task mlm or classify) to ONNX as one graph, and run it with onnxruntime.

`export_encoder_only(model_dir, out_dir)` (`transformer export-onnx` on an encoder-only model directory) writes:

    encoder_only.onnx  one call per batch
    onnx_config.json   file, input/output names, task, special ids, labels, embed pooling, opset, max_length
                       (written last: a directory without it holds no complete export)
    tokenizer.json     the model directory's tokenizer

Shapes: B batch, T tokens, D d_model, V vocab, K classes. B and T are dynamic, T <= max_length.

      in   tokens              int64 (B, T)   <bos> ids <eos> (BERT's [CLS] ids [SEP]), right-padded with pad_id
      out  hidden_states       float (B, T, D)  the encoder's output (pad positions: whatever the layers give)
           sentence_embedding  float (B, D)     `transformer embed`'s vector (model.embed_pooling and
                                                model.embed_normalize)
           logits              float (B, T, V)  task mlm: the MLM head's logits at every position
                               float (B, K)     task classify: the class logits

`OnnxEncoderOnly(out_dir)(tokens)` runs the graph and returns the three outputs by name.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from transformer.interop.onnx import DEFAULT_OPSET, _quiet_exporter, check_export, require
from transformer.safe_files import atomic_write_text

GRAPH_FILE, CONFIG_FILE = "encoder_only.onnx", "onnx_config.json"
OUTPUTS = ["hidden_states", "sentence_embedding", "logits"]


class _EncoderOnlyGraph(nn.Module):
    """tokens -> (hidden states, sentence embedding, the task's logits), through the model's own methods."""

    def __init__(self, model: nn.Module, task: str, pooling: str, normalize: bool):
        super().__init__()
        self.model, self.task, self.pooling, self.normalize = model, task, pooling, normalize

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        states = self.model.hidden_states(tokens)  # (B, T, D)
        vector = self.model.sentence_embedding(tokens, self.pooling, self.normalize)  # (B, D)
        logits = self.model.classify(tokens) if self.task == "classify" else self.model(tokens)
        return states, vector, logits  # the exporter shares the encoder between the three


def export_encoder_only(
    model_dir: str | Path, out_dir: str | Path, *, opset: int = DEFAULT_OPSET, max_length: int | None = None,
    weights: str = "model.safetensors",
) -> dict[str, Any]:
    """Export encoder-only `model_dir` into `out_dir` (see the module docstring); returns the config written.
    max_length defaults to the model's max_positions."""
    from transformer.inference import load_model_dir

    check_export(opset)
    model, tokenizer, run = load_model_dir(model_dir, weights)
    m = run.model
    limit = m.max_positions if max_length is None else max_length
    if not 3 <= limit <= m.max_positions:
        raise ValueError(f"max_length={limit}: use 3..{m.max_positions} (model.max_positions; a text takes "
                         "<bos> and <eos> besides its tokens)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG_FILE).unlink(missing_ok=True)  # an interrupted export leaves no config behind
    config = {
        "format": "transformer-onnx-encoder-only/1", "file": GRAPH_FILE, "task": run.task, "opset": opset,
        "max_length": limit, "inputs": ["tokens"], "outputs": OUTPUTS, "d_model": m.d_model,
        "vocab_size": m.tgt_vocab_size, "pad_id": m.pad_id, "bos_id": m.bos_id, "eos_id": m.eos_id,
        "labels": list(m.labels), "embed_pooling": m.embed_pooling, "embed_normalize": m.embed_normalize,
        "torch": torch.__version__,
    }
    graph = _EncoderOnlyGraph(model.eval(), run.task, m.embed_pooling, m.embed_normalize).eval()
    tokens = torch.full((2, 5), m.eos_id, dtype=torch.long)  # (B, T), the second row padded
    tokens[:, 0], tokens[1, 3:] = m.bos_id, m.pad_id
    dims = {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("length", min=1, max=limit)}
    with torch.no_grad(), _quiet_exporter():
        torch.onnx.export(graph, (tokens,), str(out_dir / GRAPH_FILE), dynamo=True, opset_version=opset,
                          dynamic_shapes={"tokens": dims}, input_names=["tokens"], output_names=OUTPUTS,
                          external_data=sum(p.numel() * p.element_size() for p in model.parameters()) > 1.5e9,
                          verbose=False)
    tokenizer.save(out_dir)
    atomic_write_text(out_dir / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    return config


class OnnxEncoderOnly:
    """An export_encoder_only directory in an onnxruntime session: call it with token ids (B, T)."""

    def __init__(self, export_dir: str | Path, providers: Sequence[str] | None = None):
        ort = require("onnxruntime", "running an ONNX export")
        export_dir = Path(export_dir)
        self.config = json.loads((export_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        if self.config.get("format") != "transformer-onnx-encoder-only/1":
            raise ValueError(f"{export_dir / CONFIG_FILE} is not an encoder-only export (format "
                             f"{self.config.get('format')!r}); export it with `transformer export-onnx`")
        self.session = ort.InferenceSession(str(export_dir / self.config["file"]),
                                            providers=list(providers or ["CPUExecutionProvider"]))

    def __call__(self, tokens: np.ndarray | Tensor) -> dict[str, np.ndarray]:
        """The graph's outputs by name for right-padded token ids (B, T); ids outside the vocabulary or a T over
        max_length are a ValueError (the graph itself cannot check them)."""
        ids = np.asarray(tokens, dtype=np.int64)
        c = self.config
        if ids.ndim != 2 or not 1 <= ids.shape[1] <= c["max_length"]:
            raise ValueError(f"tokens of shape {ids.shape}: need (batch, length) with length <= {c['max_length']}")
        if ids.size and (ids.min() < 0 or ids.max() >= c["vocab_size"]):
            raise ValueError(f"token ids must be in 0..{c['vocab_size'] - 1}, got {ids.min()}..{ids.max()}")
        return dict(zip(c["outputs"], self.session.run(c["outputs"], {"tokens": ids}), strict=True))
