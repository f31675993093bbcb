"""Run an ONNX export (`transformer.interop.onnx`) with onnxruntime: `OnnxSeq2Seq` and greedy decoding.

`OnnxSeq2Seq(out_dir)` holds encoder.onnx and decoder.onnx in onnxruntime sessions; `onnx_greedy_search`
decodes with them, token for token as `transformer.decoding.greedy_search`. The graphs' inputs, outputs and
shapes are listed in `transformer.interop.onnx`. onnxruntime is optional: `pip install 'transformer[onnx]'`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transformer.data.batching import pad_ids
from transformer.data.tokenizer import Tokenizer
from transformer.decoding.protocol import banned_ids, check_vocab, length_limits, record_step
from transformer.interop.onnx import CONFIG_FILE, require
from transformer.model_dir import inside
from transformer.special_ids import check_special_ids

__all__ = ["OnnxSeq2Seq", "onnx_greedy_search", "pad_batch"]

KV = tuple[np.ndarray, np.ndarray]  # keys, values: (B, H, L, Dh) each


class OnnxSeq2Seq:
    """The two exported graphs in onnxruntime sessions: `encode` once, then `decode_step` token by token."""

    def __init__(self, export_dir: str | Path, providers: Sequence[str] | None = None, threads: int | None = None):
        ort = require("onnxruntime", "Running an ONNX export")
        export_dir = self.export_dir = Path(export_dir)
        config_path = export_dir / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"{config_path} not found: {export_dir} holds no complete ONNX export "
                                    f"(write one with `transformer export-onnx --model DIR --out {export_dir}`)")
        self.config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        providers = list(providers or ["CPUExecutionProvider"])
        encoder, decoder = (inside(export_dir, self.config[key], key) for key in ("encoder_file", "decoder_file"))
        self.encoder = ort.InferenceSession(str(encoder), options, providers=providers)
        self.decoder = ort.InferenceSession(str(decoder), options, providers=providers)

    @property
    def n_layers(self) -> int:
        return self.config["n_layers"]

    def tokenizer(self) -> Tokenizer:
        """The tokenizer saved with the export (`export_model_dir`), with the export's special ids."""
        ids = {name: self.config[name] for name in ("pad_id", "bos_id", "eos_id")}
        return Tokenizer.load(self.export_dir, **ids)

    def encode(self, src: np.ndarray) -> tuple[np.ndarray, list[KV]]:
        """src (B, S) ids -> memory (B, S, D) and per-layer cross-attention (keys, values), (B, H, S, Dh) each."""
        src = _check_ids(src, self.config["src_vocab_size"], "src", 2)
        if not 1 <= src.shape[1] <= self.config["max_length"]:
            raise ValueError(f"source length {src.shape[1]} is outside 1..{self.config['max_length']} "
                             "(max_length of this export); truncate the source or re-export with a larger "
                             "--max-length (pad empty sources to length 1 with pad_id)")
        memory, *cross = self.encoder.run(self.config["encoder"]["outputs"], {"src": src})
        return memory, _pairs(cross)

    def empty_past(self, batch: int) -> list[KV]:
        """The self-attention cache before the first step: P = 0, (B, H, 0, Dh) each."""
        shape = (batch, self.config["n_heads"], 0, self.config["d_head"])
        return [(np.zeros(shape, np.float32), np.zeros(shape, np.float32)) for _ in range(self.n_layers)]

    def decode_step(
        self, tokens: np.ndarray, src_mask: np.ndarray, past: list[KV], cross: list[KV]
    ) -> tuple[np.ndarray, list[KV]]:
        """tokens (B, 1), src_mask (B, S) bool, past (B, H, P, Dh), cross (B, H, S, Dh) -> logits (B, 1, V), present."""
        tokens = _check_ids(tokens, self.config["tgt_vocab_size"], "tokens", 2)
        if len(past) != self.n_layers or len(cross) != self.n_layers:
            raise ValueError(f"got {len(past)} past and {len(cross)} cross (keys, values) pairs for a decoder of "
                             f"{self.n_layers} layers; pass one pair per layer")
        if past and past[0][0].shape[2] >= self.config["max_length"]:
            raise ValueError(f"past length {past[0][0].shape[2]} reaches max_length={self.config['max_length']} "
                             "of this export; re-export with a larger --max-length")
        feeds = {"tokens": tokens, "src_mask": np.asarray(src_mask, dtype=bool)}
        for prefix, pairs in (("past", past), ("cross", cross)):
            for i, (keys, values) in enumerate(pairs):
                feeds[f"{prefix}_key_{i}"], feeds[f"{prefix}_value_{i}"] = keys, values
        logits, *present = self.decoder.run(self.config["decoder"]["outputs"], feeds)
        return logits, _pairs(present)


def _pairs(arrays: list[np.ndarray]) -> list[KV]:
    return [(arrays[i], arrays[i + 1]) for i in range(0, len(arrays), 2)]


def _check_ids(ids: Any, vocab_size: int, name: str, dims: int) -> np.ndarray:
    """int64 array of token ids, or a ValueError naming the bad shape, dtype or id (before ORT sees it)."""
    ids = np.asarray(ids)
    if ids.ndim != dims or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must be integer token ids of {dims} dimensions, got shape {ids.shape} and "
                         f"dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
        raise ValueError(f"token id {bad} in {name} is out of range for a vocabulary of size {vocab_size} "
                         f"(valid ids: 0..{vocab_size - 1}); check that the tokenizer matches the model")
    return ids.astype(np.int64, copy=False)


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> np.ndarray:
    """Right-pad id lists into a (B, S) int64 array, S >= 1 (`pad_ids` as numpy, for onnxruntime)."""
    return pad_ids(sequences, pad_id).numpy()


def onnx_greedy_search(
    model: OnnxSeq2Seq,
    src: np.ndarray | Sequence[Sequence[int]],
    *,
    max_len_a: float = 1.0,
    max_len_b: int = 50,
    max_new_tokens: int | None = None,
) -> list[list[int]]:
    """Greedy decoding through onnxruntime; the same tokens as `transformer.decoding.greedy_search`.

    src: (B, S) ids right-padded with the export's pad_id, or a list of id lists (padded here). Returns one
    token list per example, without BOS and EOS; PAD and BOS are never produced. The length limit is
    max_new_tokens, or max_len_a * (source length without padding) + max_len_b, as in greedy_search.
    """
    pad_id, bos_id, eos_id = (model.config[k] for k in ("pad_id", "bos_id", "eos_id"))
    src = pad_batch(src, pad_id) if isinstance(src, (list, tuple)) else np.asarray(src)
    src = _check_ids(src, model.config["src_vocab_size"], "src", 2)
    check_special_ids(pad_id, bos_id, eos_id)
    check_vocab(model.config["tgt_vocab_size"], pad_id, bos_id, eos_id)
    src_mask = src != pad_id  # (B, S)
    limits = length_limits(torch.from_numpy(src_mask[:, None, None, :]), max_len_a, max_len_b, max_new_tokens)
    results: list[list[int]] = [[] for _ in range(src.shape[0])]
    if not results:
        return results
    if max(limits) > model.config["max_length"]:
        raise ValueError(f"up to {max(limits)} tokens may be generated, more than max_length="
                         f"{model.config['max_length']} of this export; lower max_len_a/max_len_b/max_new_tokens "
                         "or re-export with a larger --max-length")
    banned = banned_ids(pad_id, bos_id, eos_id)
    _, cross = model.encode(src)
    past = model.empty_past(src.shape[0])
    tokens = np.full((src.shape[0], 1), bos_id, dtype=np.int64)  # (B, 1)
    rows = list(range(src.shape[0]))  # example behind each row still in the batch
    for step in range(max(limits)):
        logits, past = model.decode_step(tokens, src_mask, past, cross)  # (B, 1, V)
        scores = logits[:, -1].astype(np.float32)  # (B, V)
        scores[:, banned] = -np.inf
        next_tokens = scores.argmax(axis=-1)  # (B,)
        keep = record_step(next_tokens.tolist(), rows, results, limits, step, eos_id)
        if not keep:
            break
        tokens = next_tokens[:, None].astype(np.int64)  # (B, 1)
        if len(keep) < len(rows):
            tokens, src_mask = tokens[keep], src_mask[keep]
            past = [(keys[keep], values[keep]) for keys, values in past]
            cross = [(keys[keep], values[keep]) for keys, values in cross]
            rows = [rows[i] for i in keep]
    return results
