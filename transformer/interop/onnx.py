"""Export an EncoderDecoder to ONNX as an encoder and one decoder step with a KV cache.

`export_onnx(model, out_dir, ...)`, `export_model_dir(model_dir, out_dir)` or
`transformer export-onnx --model DIR --out DIR` write into the output directory:

    encoder.onnx      run once per batch of sources
    decoder.onnx      run once per generated token
    onnx_config.json  graph input/output names, n_layers, n_heads, d_head, vocab sizes, special ids, opset,
                      max_length (written last: a directory without it holds no complete export)
    tokenizer.json    the model directory's tokenizer (export_model_dir only)

Shapes: B batch, S source length, P past length (target tokens already fed to the decoder), D d_model,
H heads, Dh head dim, V target vocab; i = 0 .. n_layers - 1 counts decoder layers. Floats are float32.

    encoder.onnx
      in   src              int64 (B, S)           source ids, right-padded with pad_id
      out  memory           float (B, S, D)        the encoder output
           cross_key_i      float (B, H, S, Dh)    layer i's cross-attention keys and values, computed once
           cross_value_i    float (B, H, S, Dh)    here and fed unchanged to every decoder step
    decoder.onnx
      in   tokens           int64 (B, 1)           the newest target token (BOS at the first step)
           src_mask         bool  (B, S)           True where src holds a real token (src != pad_id)
           past_key_i       float (B, H, P, Dh)    self-attention keys and values of the P earlier tokens;
           past_value_i     float (B, H, P, Dh)    P = 0 (arrays of shape (B, H, 0, Dh)) at the first step
           cross_key_i      float (B, H, S, Dh)    from encoder.onnx
           cross_value_i    float (B, H, S, Dh)
      out  logits           float (B, 1, V)        next-token logits
           present_key_i    float (B, H, P+1, Dh)  past_key_i with this step's keys appended:
           present_value_i  float (B, H, P+1, Dh)  the next step's past_key_i / past_value_i

B, S and P are dynamic. The new token's position is P, read from past_key_0's shape inside the graph, so the
positional encoding follows the cache. S <= max_length and P < max_length (the positional table is exported
with the graph). Both graphs wrap the model's own `encode` and `decode` (the decoder with a DecoderCache built
from the input tensors), so every model option is exported as it runs in PyTorch.

`transformer.interop.onnx_runtime` runs an export: `OnnxSeq2Seq(out_dir)` holds the two graphs in onnxruntime
sessions and `onnx_greedy_search` decodes with them, token for token as `transformer.decoding.greedy_search`.
onnx, onnxscript and onnxruntime are optional: `pip install 'transformer[onnx]'`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from transformer.models.seq2seq import EncoderDecoder
from transformer.nn.kv_cache import DecoderCache, KVCache
from transformer.nn.masks import padding_mask
from transformer.safe_files import atomic_write_text
from transformer.special_ids import check_special_ids

logger = logging.getLogger(__name__)

ENCODER_FILE, DECODER_FILE, CONFIG_FILE = "encoder.onnx", "decoder.onnx", "onnx_config.json"
DEFAULT_OPSET = 18
# From opset 23 torch writes attention as ONNX's Attention op, whose onnxruntime (1.31) CPU kernel rejects a
# padding mask that broadcasts over the query positions: (B, 1, 1, S) against T queries.
MAX_OPSET = 22
_PIP = "pip install 'transformer[onnx]'  (or: pip install onnx onnxscript onnxruntime)"

def require(name: str, purpose: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ModuleNotFoundError(f"{purpose} needs the package {name!r}, which is not installed: run `{_PIP}`",
                                  name=name) from None


def check_export(opset: int) -> None:
    """Raise now if an ONNX export could not run: the packages it needs, and an opset it supports."""
    require("onnx", "ONNX export")
    require("onnxscript", "ONNX export (torch's exporter)")
    if not DEFAULT_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset={opset} is not supported: use {DEFAULT_OPSET}..{MAX_OPSET} (torch's exporter writes "
                         f"18 and up; from 23, onnxruntime rejects its Attention op with our padding masks)")


def _kv_names(prefix: str, n_layers: int) -> list[str]:
    return [f"{prefix}_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]


def graph_names(n_layers: int) -> dict[str, dict[str, list[str]]]:
    """Input and output names of both graphs, in order."""
    return {
        "encoder": {"inputs": ["src"], "outputs": ["memory", *_kv_names("cross", n_layers)]},
        "decoder": {
            "inputs": ["tokens", "src_mask", *_kv_names("past", n_layers), *_kv_names("cross", n_layers)],
            "outputs": ["logits", *_kv_names("present", n_layers)],
        },
    }


# ---------------------------------------------------------------------------------------------- export


class _EncoderGraph(nn.Module):
    """src -> memory and every layer's cross-attention keys/values."""

    def __init__(self, model: EncoderDecoder):
        super().__init__()
        self.model = model

    def forward(self, src: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        src_mask = padding_mask(src, self.model.pad_id)  # (B, 1, 1, S)
        memory = self.model.encode(src, src_mask)  # (B, S, D)
        cache = DecoderCache.setup(len(self.model.decoder.layers))
        # A throwaway step fills the cross-attention caches through the model's own code; all of it but the
        # key/value projections of the memory is dead code, which the exporter drops.
        self.model.decode(torch.full_like(src[:, :1], self.model.pad_id), memory, src_mask, cache)
        return memory, [(cross.k, cross.v) for _, cross in cache.layers]  # (B, S, D), (B, H, S, Dh) each


class _DecoderStepGraph(nn.Module):
    """One decoder step over caches given as tensors: (tokens, src_mask, past, cross) -> (logits, present)."""

    def __init__(self, model: EncoderDecoder):
        super().__init__()
        self.model = model

    def forward(
        self, tokens: Tensor, src_mask: Tensor, past: list[tuple[Tensor, Tensor]], cross: list[tuple[Tensor, Tensor]]
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        cache = DecoderCache([
            (KVCache(k=past_k, v=past_v), KVCache(static=True, k=cross_k, v=cross_v))
            for (past_k, past_v), (cross_k, cross_v) in zip(past, cross, strict=True)
        ])
        # The cross-attention caches are full, so the memory itself is never read: None stands in for it.
        logits = self.model.decode(tokens, None, src_mask[:, None, None, :], cache)  # (B, 1, V)
        return logits, [(own.k, own.v) for own, _ in cache.layers]  # (B, H, P + 1, Dh) each


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's notes that concern torch itself (torchvision ops, axis renaming, deprecations)."""
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"# The axis name", category=UserWarning)
            warnings.filterwarnings("ignore", message=r".*LeafSpec", category=FutureWarning)
            yield
    finally:
        exporter_log.setLevel(level)


def _check_max_length(model: EncoderDecoder, max_length: int, probe_id: int) -> None:
    """Run the embeddings on the longest positions the graphs will accept (grows a sinusoidal table)."""
    if max_length < 1:
        raise ValueError(f"max_length={max_length} must be >= 1")
    ids = torch.full((1, max_length), probe_id, dtype=torch.long)
    try:
        with torch.no_grad():
            model.src_embed(ids)
            model.tgt_embed(ids[:, :1], max_length - 1)
    except ValueError as error:
        raise ValueError(f"max_length={max_length} is more positions than the model has: {error}; "
                         "export with a smaller max_length (--max-length)") from None


def export_onnx(
    model: EncoderDecoder,
    out_dir: str | Path,
    *,
    bos_id: int,
    eos_id: int,
    opset: int = DEFAULT_OPSET,
    max_length: int = 1024,
) -> dict[str, Any]:
    """Write encoder.onnx, decoder.onnx and onnx_config.json into `out_dir`; returns the config written.

    The pad id is the model's. `max_length` bounds the source length and the decoded length.
    """
    check_export(opset)
    pad_id = model.pad_id
    check_special_ids(pad_id, bos_id, eos_id)
    if model.decoder.position_bias is not None:
        raise ValueError("model.positional='relative' (T5) is not exported to ONNX; translate with the torch engine")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG_FILE).unlink(missing_ok=True)  # an interrupted export leaves no config behind
    n_layers = len(model.decoder.layers)
    attention = model.decoder.layers[0].self_attn
    config = {
        "format": "transformer-onnx/1",
        "encoder_file": ENCODER_FILE, "decoder_file": DECODER_FILE, "opset": opset, "max_length": max_length,
        "n_layers": n_layers, "n_heads": attention.n_heads, "d_head": attention.d_head, "d_model": attention.d_model,
        "src_vocab_size": model.src_embed.tokens.vocab_size, "tgt_vocab_size": model.tgt_embed.tokens.vocab_size,
        "pad_id": pad_id, "bos_id": bos_id, "eos_id": eos_id, "torch": torch.__version__,
        **graph_names(n_layers),
    }
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    was_training = model.training
    model.eval()
    try:
        _check_max_length(model, max_length, eos_id)
        with _quiet_exporter():
            _export_graphs(model, out_dir, config, external_data=n_bytes > 1.5e9)
    finally:
        model.train(was_training)
    atomic_write_text(out_dir / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    logger.info("exported %s and %s to %s (opset %d)", ENCODER_FILE, DECODER_FILE, out_dir, opset)
    return config


def _export_graphs(model: EncoderDecoder, out_dir: Path, config: dict[str, Any], external_data: bool) -> None:
    """Trace both graphs on small example inputs (B=2, S=5 with padding, P=3) with dynamic B, S and P."""
    n_layers, heads, d_head, max_length = config["n_layers"], config["n_heads"], config["d_head"], config["max_length"]
    batch = torch.export.Dim("batch", min=1)
    src_len = torch.export.Dim("src_len", min=1, max=max_length)
    past_len = torch.export.Dim("past_len", min=0, max=max_length - 1)
    src = torch.full((2, 5), config["eos_id"], dtype=torch.long)  # (B, S)
    src[1, 3:] = config["pad_id"]
    common = dict(dynamo=True, opset_version=config["opset"], external_data=external_data, verbose=False)
    with torch.no_grad():
        torch.onnx.export(
            _EncoderGraph(model).eval(), (src,), str(out_dir / ENCODER_FILE),
            dynamic_shapes={"src": {0: batch, 1: src_len}}, input_names=config["encoder"]["inputs"],
            output_names=config["encoder"]["outputs"], **common,
        )
        tokens = torch.full((2, 1), config["eos_id"], dtype=torch.long)  # (B, 1)
        past = [(torch.zeros(2, heads, 3, d_head), torch.zeros(2, heads, 3, d_head)) for _ in range(n_layers)]
        cross = [(torch.zeros(2, heads, 5, d_head), torch.zeros(2, heads, 5, d_head)) for _ in range(n_layers)]
        past_shape, cross_shape = {0: batch, 2: past_len}, {0: batch, 2: src_len}
        dynamic_shapes = {
            "tokens": {0: batch}, "src_mask": {0: batch, 1: src_len},
            "past": [(past_shape, past_shape)] * n_layers, "cross": [(cross_shape, cross_shape)] * n_layers,
        }
        src_mask = src != config["pad_id"]  # (B, S)
        torch.onnx.export(
            _DecoderStepGraph(model).eval(), (tokens, src_mask, past, cross), str(out_dir / DECODER_FILE),
            dynamic_shapes=dynamic_shapes, input_names=config["decoder"]["inputs"],
            output_names=config["decoder"]["outputs"], **common,
        )


def export_model_dir(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    max_length: int | None = None,
    weights: str = "model.safetensors",
) -> dict[str, Any]:
    """Export a model directory (`transformer train` or `import-hf` wrote it) and save its tokenizer alongside.

    max_length defaults to the model config's max_positions. Special ids are the tokenizer's, as in `translate`.
    """
    from transformer.inference import load_model_dir

    require("onnx", "ONNX export")
    require("onnxscript", "ONNX export (torch's exporter)")
    model, tokenizer, run_config = load_model_dir(model_dir, weights)
    limit = run_config.model.max_positions if max_length is None else max_length
    config = export_onnx(model, out_dir, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, opset=opset,
                         max_length=limit)
    tokenizer.save(out_dir)
    return config
