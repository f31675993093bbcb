"""Attention weights of one teacher-forced pass, for plots (`transformer attention`) and the server.

One implementation for every model kind: the model runs once on its input through the paper's explicit
attention path (`need_weights=True`: softmax(Q K^T / sqrt(Dh)) materialized, nn/attention.py), and each layer's
weights are read from where the layers keep them (nn/layers.py: `attn_weights` of an encoder layer,
`self_attn_weights` and `cross_attn_weights` of a decoder layer). A translation is first produced by the
model's own search (`translate_ids`, with the decode settings of config.yaml), then run teacher-forced on
source + produced output: the weights are those the search saw when it chose each token.

Rows of `decoder` and `cross` are decoding steps: row t is the step that produced target_tokens[t] (the last
one </s>), whose query sits at the position holding the token before it; so the decoder's key (column) s
holds `AttentionMaps.decoder_inputs[s]` = ['<bos>', *target_tokens][s].

Not safe against concurrent forward passes on the same model object (they overwrite the layers' stored
weights): callers that share a model between threads serialize these calls with their searches.

Shapes: H heads, S source (or single-stack) length, T target length (steps), L layers, P patches per side.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from transformer.nn.masks import padding_mask

_LOCK = threading.Lock()  # one weights-reading pass at a time through this module


@dataclass
class AttentionMaps:
    """Per-layer attention weights of one input, each (H, queries, keys), rows summing to 1."""

    source_tokens: list[str]  # readable labels of the source (or the single stack's) tokens
    target_tokens: list[str]  # the produced output's tokens, </s> last (empty for single-stack models)
    encoder: list[Tensor] = field(default_factory=list)  # per layer (H, S, S); GPT/BERT/ViT self-attention too
    decoder: list[Tensor] = field(default_factory=list)  # per layer (H, T, T), zero above the diagonal
    cross: list[Tensor] = field(default_factory=list)  # per layer (H, T, S)

    @property
    def decoder_inputs(self) -> list[str]:
        """Labels of the decoder's keys (the tokens the steps read): '<bos>', then each produced token."""
        return ["<bos>", *self.target_tokens[:-1]] if self.target_tokens else []


def readable_tokens(hf_tokenizer, ids: list[int]) -> list[str]:
    """One label per id, as a user reads the text: each token's share of the decoded text, whitespace stripped
    (byte-level BPE's Ġ, SentencePiece's ▁ gone). The byte pieces of one character all show that character;
    a token that is only whitespace shows '␣'."""
    labels: list[str] = []
    pending: list[int] = []  # byte pieces waiting for their character to complete
    shown = ""
    for t in range(len(ids)):
        text = hf_tokenizer.decode(ids[: t + 1], skip_special_tokens=False)
        if text.endswith("\ufffd") and t + 1 < len(ids):  # an incomplete character: wait for its other bytes
            pending.append(t)
            labels.append("")
            continue
        if text.startswith(shown):
            piece = text[len(shown):]
        else:  # a decoder that rewrites earlier text (rare): the token on its own
            piece = hf_tokenizer.decode([ids[t]], skip_special_tokens=False)
        label = piece.strip() or "␣"
        for p in pending:
            labels[p] = label
        labels.append(label)
        pending, shown = [], text
    return labels


def _layer_weights(layers, name: str) -> list[Tensor]:
    """The stored weights `name` of each layer, as (H, Q, K) float tensors; the layers' copies are dropped."""
    found = []
    for i, layer in enumerate(layers):
        weights = getattr(layer, name)
        if weights is None:
            raise RuntimeError(f"layer {i} kept no {name}: a concurrent forward pass on the same model overwrote "
                               "them; serialize attention requests with the model's other work")
        found.append(weights[0].detach().float().cpu())  # (H, Q, K)
        setattr(layer, name, None)
    return found


def _source_ids(tokenizer, config, source: str) -> list[int]:
    """The source as translation encodes it (inference._batches): decode.prefix, the file's special tokens, at
    most data.max_len ids (without a config: no prefix, no limit)."""
    if config is None:
        return tokenizer.encode_batch([source], add_special_tokens=True)[0]
    text = config.decode.prefix + source if config.decode.prefix else source
    return tokenizer.encode_batch([text], add_special_tokens=True, max_len=config.data.max_len)[0]


def translation_attention(model: nn.Module, tokenizer, source: str, output_ids: list[int],
                          config=None) -> AttentionMaps:
    """Encoder self-, decoder masked self- and cross-attention of an encoder-decoder `model` translating `source`
    into `output_ids` (the search's tokens, without <bos>; a final </s> is optional): one teacher-forced pass
    over <bos> + output. `config` (the RunConfig) supplies decode.prefix and data.max_len when given."""
    from transformer.model_config import refuse_baseline
    from transformer.models.recurrent import RecurrentEncoderDecoder

    if isinstance(model, RecurrentEncoderDecoder):
        refuse_baseline(model.kind, "translation_attention (attention maps)",
                        "its additive attention's weights are model.alignments(src, tgt)")
    if not hasattr(model, "decoder") or not hasattr(model, "encode"):
        raise ValueError(f"translation_attention needs an encoder-decoder model, got {type(model).__name__}; "
                         "use self_attention for GPT and BERT models")
    src_ids = _source_ids(tokenizer, config, source)
    if not src_ids:
        raise ValueError("the source is empty after tokenization; give some text to translate")
    steps = [int(i) for i in output_ids]
    if not steps or steps[-1] != tokenizer.eos_id:
        steps.append(tokenizer.eos_id)  # the step that ended the output
    device = next(model.parameters()).device
    src = torch.tensor([src_ids], device=device)  # (1, S)
    tgt = torch.tensor([[tokenizer.bos_id, *steps[:-1]]], device=device)  # (1, T)
    with _LOCK, torch.inference_mode():
        memory = model.encode(src, None, need_weights=True)  # (1, S, D)
        encoder = _layer_weights(model.encoder.layers, "attn_weights")
        model.decode(tgt, memory, padding_mask(src, model.pad_id), None, need_weights=True)
        decoder = _layer_weights(model.decoder.layers, "self_attn_weights")
        cross = _layer_weights(model.decoder.layers, "cross_attn_weights")
    return AttentionMaps(readable_tokens(tokenizer.hf_tokenizer, src_ids),
                         readable_tokens(tokenizer.target_hf_tokenizer, steps), encoder, decoder, cross)


def single_stack_ids(model: nn.Module, tokenizer, text: str, max_len: int | None = None) -> list[int]:
    """The ids a GPT reads (<bos> + text, as `generate` does) or a BERT reads (<bos> text <eos>, its [CLS] and
    [SEP], as `embed` does)."""
    ids = tokenizer.encode_batch([text], max_len=max_len)[0]
    if not ids:
        raise ValueError("the text is empty after tokenization; give --text some words")
    is_bert = type(model).__name__ == "EncoderOnly"
    return [tokenizer.bos_id, *ids, tokenizer.eos_id] if is_bert else [tokenizer.bos_id, *ids]


def self_attention(model: nn.Module, tokenizer, text: str, max_len: int | None = None) -> AttentionMaps:
    """The self-attention of each layer of a GPT (causal) or BERT (bidirectional) model reading `text`, in
    `encoder`; `target_tokens`, `decoder` and `cross` stay empty."""
    if not hasattr(model, "stack") or not hasattr(model, "embed"):
        raise ValueError(f"self_attention needs a GPT or BERT model, got {type(model).__name__}; use "
                         "translation_attention for an encoder-decoder model and vit_attention for a ViT")
    ids = single_stack_ids(model, tokenizer, text, max_len)
    tokens = torch.tensor([ids], device=next(model.parameters()).device)  # (1, S)
    with _LOCK, torch.inference_mode():
        model.hidden_states(tokens, need_weights=True)
        encoder = _layer_weights(model.stack.layers, "attn_weights")
    return AttentionMaps(readable_tokens(tokenizer.hf_tokenizer, ids), [], encoder)


def vit_attention(model: nn.Module, images: Tensor) -> AttentionMaps:
    """The self-attention of each layer of a Vision Transformer reading one image (1, C, H, W); the tokens are
    [CLS] and the patches p0, p1, ... in row-major order."""
    if not hasattr(model, "patch_embed"):
        raise ValueError(f"vit_attention needs a Vision Transformer, got {type(model).__name__}")
    with _LOCK, torch.inference_mode():
        model.hidden_states(images.to(next(model.parameters()).device), need_weights=True)
        encoder = _layer_weights(model.stack.layers, "attn_weights")
    n = encoder[0].size(-1) - 1
    return AttentionMaps(["[CLS]", *(f"p{i}" for i in range(n))], [], encoder)


def rollout(layers: list[Tensor]) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020): per layer, the heads' mean plus the identity (the residual
    path), rows renormalized to sum to 1; the product through the layers, last layer leftmost: (S, S)."""
    if not layers:
        raise ValueError("rollout needs the weights of at least one layer")
    result = np.eye(layers[0].shape[-1])
    for weights in layers:
        mean = np.asarray(weights, dtype=np.float64).mean(axis=0)  # (S, S)
        mixed = mean + np.eye(mean.shape[0])
        result = (mixed / mixed.sum(axis=-1, keepdims=True)) @ result
    return result


def cls_rollout(layers: list[Tensor], patches_per_side: int) -> np.ndarray:
    """The [CLS] row of the rollout over the patches, as a (P, P) grid (row-major patches, as patchify)."""
    row = rollout(layers)[0, 1:]  # (P * P,)
    if row.size != patches_per_side**2:
        raise ValueError(f"{row.size} patches do not make a {patches_per_side} x {patches_per_side} grid")
    return row.reshape(patches_per_side, patches_per_side)


def alignment(maps: AttentionMaps, layer: int = -1) -> list[tuple[str, str, float]]:
    """For each output token: the source token with the highest cross-attention of `layer` (default the
    last), averaged over the heads, and that weight."""
    check_layer(layer, len(maps.cross), "cross-attention")
    mean = maps.cross[layer].mean(dim=0)  # (T, S)
    best = mean.argmax(dim=-1)  # (T,)
    return [(target, maps.source_tokens[int(s)], float(mean[t, s]))
            for t, (target, s) in enumerate(zip(maps.target_tokens, best.tolist(), strict=True))]


def check_layer(layer: int, n_layers: int, kind: str) -> None:
    """Refuse a layer number outside -n_layers .. n_layers - 1."""
    if n_layers == 0:
        raise ValueError(f"this model has no {kind} layers; --align and --layer need an encoder-decoder model")
    if not -n_layers <= layer < n_layers:
        raise ValueError(f"--layer {layer}: the model has {n_layers} {kind} layers; give 0..{n_layers - 1} "
                         "(or -1, the last)")


def translate_ids(model: nn.Module, tokenizer, source: str, config) -> list[int]:
    """The output ids (no <bos>, no </s>) the model's search produces for `source` with the decode settings of
    `config` (config.yaml's decode section: beam, alpha, length limits, prefix), as `transformer translate`."""
    from transformer.decoding import beam_search, greedy_search

    decode = config.decode
    src_ids = _source_ids(tokenizer, config, source)
    if not src_ids:
        raise ValueError("the source is empty after tokenization; give --text some words")
    src = torch.tensor([src_ids], device=next(model.parameters()).device)  # (1, S)
    args = dict(pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id,
                max_len_a=decode.max_len_a, max_len_b=decode.max_len_b)
    with torch.inference_mode():
        if decode.beam == 1:
            return list(greedy_search(model, src, **args)[0])
        found = beam_search(model, src, beam_size=decode.beam, alpha=decode.alpha, **args)[0]
    return list(found[0].tokens) if found else []
