"""Our encoder-only model directory written as a BERT save_pretrained directory (`transformer export-hf`):
BertForMaskedLM for task mlm, BertForSequenceClassification for task classify, with the same logits.

BERT has fixed choices where our model has options; a model with another choice is refused, naming it:
post-LN (norm_first=false), learned absolute positions from row 0 (positional=learned), a LayerNorm on the
embeddings (layernorm_embedding=true), no sqrt(d) scaling (scale_embedding=false), the classifier reading the
[CLS] state (pooling=cls), and for an MLM head GELU (hidden_act is both the feed-forward's and the head's
activation; ours is always GELU). A model without token types gets one all-zero type row (type_vocab_size=1),
one without an output bias a zero bias: both add nothing. The tokenizer goes with it, with a post-processor
that puts <bos> and <eos> (BERT's [CLS] and [SEP]) around a text as our code paths do.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from transformer.config import ModelConfig, RunConfig
from transformer.interop.export_hf import load_for_export, refuse_options, write_json, write_safetensors
from transformer.interop.hf_bert import _LAYER_PARTS, _OTHER_PARTS
from transformer.model_dir import read_config

_HF_ACTIVATION = {"gelu": "gelu", "relu": "relu", "swish": "silu", "gelu_new": "gelu_new"}
# ModelConfig fields this exporter reads or checks itself (refuse_options refuses any other that is not default)
_HANDLED = {"type", "src_vocab_size", "tgt_vocab_size", "d_model", "n_heads", "d_ff", "n_encoder_layers",
            "n_decoder_layers", "n_layers", "dropout", "attention_dropout", "activation_dropout", "activation",
            "norm_first", "positional", "sinusoidal_interleaved", "max_positions", "position_offset",
            "layernorm_embedding", "share_embeddings", "tie_output", "output_bias", "scale_embedding",
            "layer_norm_eps", "pad_id", "bos_id", "eos_id", "n_classes", "labels", "type_vocab_size", "pooling",
            "embed_pooling", "embed_normalize", "image_size", "patch_size", "channels"}
_MUST = (("norm_first", False, "BERT is post-LN"), ("positional", "learned", "BERT learns absolute positions"),
         ("position_offset", 0, "BERT's positions start at row 0"),
         ("layernorm_embedding", True, "BERT normalizes its embeddings"),
         ("scale_embedding", False, "BERT does not scale its embeddings"))


def bert_refusals(config: RunConfig) -> list[str]:
    """Why `config`'s model cannot be written as BERT: one line per option (empty when it can)."""
    m, target = config.model, _architecture(config)
    refused = [f"model.{key}={getattr(m, key)!r} ({why}: {key}={value!r})" for key, value, why in _MUST
               if getattr(m, key) != value]
    if m.activation not in _HF_ACTIVATION:
        refused.append(f"model.activation={m.activation!r} (supported: {sorted(_HF_ACTIVATION)})")
    elif config.task == "mlm" and m.activation != "gelu":
        refused.append(f"model.activation={m.activation!r} (BERT's hidden_act is also its MLM head's activation, "
                       "and our MLM head is GELU: activation=gelu)")
    if config.task == "classify" and m.pooling != "cls":
        refused.append(f"model.pooling={m.pooling!r} (BERT's pooler reads the [CLS] state: pooling=cls)")
    return refused + refuse_options(m, _HANDLED, target)


def _architecture(config: RunConfig) -> str:
    return "BertForSequenceClassification" if config.task == "classify" else "BertForMaskedLM"


def bert_config_json(config: RunConfig) -> dict[str, Any]:
    """config.json of the BERT class that holds `config`'s model."""
    m = config.model
    values: dict[str, Any] = {
        "architectures": [_architecture(config)], "model_type": "bert", "vocab_size": m.tgt_vocab_size,
        "hidden_size": m.d_model, "num_hidden_layers": m.n_layers, "num_attention_heads": m.n_heads,
        "intermediate_size": m.d_ff, "hidden_act": _HF_ACTIVATION[m.activation], "hidden_dropout_prob": m.dropout,
        "attention_probs_dropout_prob": m.attention_dropout, "max_position_embeddings": m.max_positions,
        "type_vocab_size": max(m.type_vocab_size, 1), "layer_norm_eps": m.layer_norm_eps, "pad_token_id": m.pad_id,
        "tie_word_embeddings": m.tie_output, "position_embedding_type": "absolute", "is_decoder": False,
        "add_cross_attention": False, "initializer_range": 0.02, "classifier_dropout": None,
    }
    if config.task == "classify":
        labels = m.labels or tuple(f"LABEL_{i}" for i in range(m.n_classes))
        values |= {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)},
                   "problem_type": "single_label_classification"}
    return values


_OUR_LAYER = re.compile(r"stack\.layers\.(\d+)\.(.+\.)(\w+)")
_TO_HF_LAYER = {ours: hf for hf, ours in _LAYER_PARTS.items()}
_TO_HF_OTHER = {ours: hf for hf, ours in _OTHER_PARTS.items()}


def _hf_name(name: str) -> str | None:
    """The BERT name of one of our parameters ("bert." prefixed for the encoder), None for one BERT lacks."""
    layer = _OUR_LAYER.fullmatch(name)
    if layer:
        index, part, leaf = layer.groups()
        return f"bert.encoder.layer.{index}.{_TO_HF_LAYER[part]}{leaf}"
    if name == "output_proj.bias":
        return "cls.predictions.bias"
    for ours, hf in _TO_HF_OTHER.items():
        if name.startswith(ours) and name.count(".") == ours.count("."):
            return ("" if hf.startswith(("cls.", "classifier.")) else "bert.") + hf + name[len(ours):]
    return None


def bert_state(model: nn.Module, config: RunConfig) -> dict[str, Tensor]:
    """Our weights under BERT's names: the MLM head for task mlm, the pooler and classifier for classify."""
    m, classify = config.model, config.task == "classify"
    ours = dict(model.state_dict())
    if m.tie_output:
        ours.pop("output_proj.weight", None)
    if not m.output_bias:
        ours["output_proj.bias"] = torch.zeros(m.tgt_vocab_size)
    if m.type_vocab_size == 0:
        ours["token_types.weight"] = torch.zeros(1, m.d_model)
    other_heads = ("mlm_", "output_proj.") if classify else ("pooler.", "classifier.")  # not in the BERT class
    state = {}
    for name, tensor in ours.items():
        if name.startswith(other_heads):
            continue
        hf = _hf_name(name)
        if hf is None:
            raise ValueError(f"our parameter {name} has no place in BERT; this model has parts BERT lacks")
        state[hf] = tensor
    if not classify and not m.tie_output:  # an untied decoder keeps a bias of its own, which its forward adds
        state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"]
    return state


def export_bert(model_dir: Path, out: Path) -> Path:
    """Write encoder-only `model_dir` as a BERT directory `out` (existing, empty): config.json,
    model.safetensors, tokenizer.json and tokenizer_config.json. Refuses, before loading any weights, a model
    whose options BERT cannot express (ValueError naming each)."""
    config = read_config(model_dir)
    if config.model.type != "encoder_only":
        raise ValueError(f"model.type={config.model.type!r}: export_bert writes encoder-only models")
    refused = bert_refusals(config)
    if refused:
        raise ValueError(f"{model_dir} cannot be written as {_architecture(config)}: {'; '.join(refused)}")
    model, config = load_for_export(model_dir)
    write_json(out / "config.json", bert_config_json(config))
    write_safetensors(out / "model.safetensors", bert_state(model, config))
    _write_tokenizer(model_dir, out, config.model)
    return out


def _write_tokenizer(model_dir: Path, out: Path, m: ModelConfig) -> None:
    """tokenizer.json with <bos> X <eos> (BERT's [CLS] X [SEP]) as its post-processor; tokenizer_config.json."""
    from tokenizers import processors

    from transformer.data.tokenizer import TOKENIZER_FILE, Tokenizer

    tokenizer = Tokenizer.load(model_dir / TOKENIZER_FILE, pad_id=m.pad_id, bos_id=m.bos_id, eos_id=m.eos_id)
    hf = tokenizer.hf_tokenizer
    hf.encode_special_tokens = False  # Hugging Face's default: a special token's text is that token
    token = hf.id_to_token
    cls, sep = token(m.bos_id), token(m.eos_id)
    hf.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, m.bos_id), (sep, m.eos_id)])
    hf.save(str(out / "tokenizer.json"))
    specials = {"cls_token": cls, "sep_token": sep, "pad_token": token(m.pad_id)}
    for key, name in (("mask_token", tokenizer.mask_id), ("unk_token", tokenizer.unk_id)):
        if name is not None:
            specials[key] = token(name)
    if tokenizer.unk_id is None and hf.token_to_id("[UNK]") is not None:
        specials["unk_token"] = "[UNK]"
    write_json(out / "tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast",
                                                "model_max_length": m.max_positions, **specials})
