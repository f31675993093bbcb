"""Run Hugging Face BERT checkpoints (BertModel, BertForMaskedLM, BertForSequenceClassification, and the BERT
models of sentence-transformers) in our EncoderOnly, with identical weights; and write ours back as BERT.

    load_bert_dir(hf_dir, config)   a save_pretrained directory -> (EncoderOnly, Tokenizer, RunConfig);
                                    interop/huggingface.py calls it for model_type "bert" (`transformer import-hf`)
    export_bert(model_dir, out)     our encoder-only model directory -> a BERT save_pretrained directory
                                    (interop/hf_bert_export.py; `transformer export-hf`)

BERT is a setting of our encoder-only model's options (ModelConfig), not a copy of its code: post-LN layers,
learned absolute positions, token-type embeddings, a LayerNorm on the embeddings (layernorm_embedding), no
sqrt(d) scaling, layer_norm_eps, the pooler (dense + tanh on [CLS]), the MLM head (dense, GELU, LayerNorm,
tied decoder + bias: output_bias) and the classifier on the pooled output. Our tokenizer paths put <bos> and
<eos> around a text; BERT's are [CLS] and [SEP], so bos_id and eos_id are theirs ([CLS] X [SEP]).

Not reproduced: position_embedding_type other than "absolute", decoders (is_decoder, add_cross_attention),
the NSP head of BertForPreTraining (dropped with a warning), regression and multi-label classifiers, and
text pairs (segment B; token types are all 0, as Hugging Face's default).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from torch import Tensor

from transformer.config import ACTIVATION_NAMES, DataConfig, DecodeConfig, ModelConfig, RunConfig, TrainConfig
from transformer.data.tokenizer import Tokenizer
from transformer.interop.hf_bert_tokenizer import bert_tokenizer
from transformer.interop.hf_sentence import sentence_settings
from transformer.interop.huggingface import positive_int
from transformer.model_dir import apply_weights
from transformer.models import EncoderOnly, build_model

logger = logging.getLogger(__name__)

# Hugging Face hidden_act -> ours (those our layers have: config.ACTIVATION_NAMES)
BERT_ACTIVATIONS = {name: ours for name, ours in {
    "gelu": "gelu", "relu": "relu", "silu": "swish", "swish": "swish", "gelu_new": "gelu_new",
    "gelu_pytorch_tanh": "gelu_new"}.items() if ours in ACTIVATION_NAMES}
_MUST_BE = {"position_embedding_type": "absolute", "is_decoder": False, "add_cross_attention": False}
ARCHITECTURES = ("BertModel", "BertForMaskedLM", "BertForPreTraining", "BertForSequenceClassification")
# Parts of our model a checkpoint may lack (BertForMaskedLM has no pooler, BertModel no MLM head): kept fresh.
_OPTIONAL = re.compile(r"pooler\..*|mlm_(dense|norm)\..*|output_proj\.(bias|weight)|token_types\.weight")


# ------------------------------------------------------------------------------------------------ config


def _positive(config: dict[str, Any], key: str) -> int:
    return positive_int(config, key, "a BertModel, BertForMaskedLM or BertForSequenceClassification")


def check_bert(config: dict[str, Any]) -> str:
    """The architecture of a BERT config.json, after refusing what we cannot run (the ValueError lists it all,
    with what is supported)."""
    unsupported = [f"{key}={config[key]!r} (supported: {expected!r})"
                   for key, expected in _MUST_BE.items() if key in config and config[key] != expected]
    activation = config.get("hidden_act", "gelu")
    if activation not in BERT_ACTIVATIONS:
        unsupported.append(f"hidden_act={activation!r} (supported: {sorted(BERT_ACTIVATIONS)})")
    architecture = (config.get("architectures") or ["BertModel"])[0]
    if architecture not in ARCHITECTURES:
        unsupported.append(f"architectures=[{architecture!r}] (supported: {list(ARCHITECTURES)})")
    if architecture == "BertForSequenceClassification" and config.get("problem_type") not in (
            None, "single_label_classification"):
        unsupported.append(f"problem_type={config['problem_type']!r} (supported: single_label_classification)")
    if unsupported:
        raise ValueError(f"this bert checkpoint uses options we do not support: {'; '.join(unsupported)}. Supported: "
                         "an encoder with absolute positions, as BertModel, BertForMaskedLM or a single-label "
                         "BertForSequenceClassification builds it")
    return architecture


def _labels(config: dict[str, Any]) -> tuple[str, ...]:
    id2label = config.get("id2label") or {}
    n = len(id2label) or int(config.get("num_labels", 2))
    if n < 2:
        raise ValueError(f"config.json num_labels={n}: a regression head; only classifiers with >= 2 labels import")
    return tuple(str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n))


def bert_model_config(config: dict[str, Any], tokenizer: Tokenizer, classify: bool) -> ModelConfig:
    """Our ModelConfig for a BERT config.json; the special ids are the tokenizer's ([CLS] as bos, [SEP] as eos)."""
    labels = _labels(config) if classify else ()
    vocab = _positive(config, "vocab_size")
    return ModelConfig(
        type="encoder_only", src_vocab_size=vocab, tgt_vocab_size=vocab, d_model=_positive(config, "hidden_size"),
        n_heads=_positive(config, "num_attention_heads"), d_ff=_positive(config, "intermediate_size"),
        n_layers=_positive(config, "num_hidden_layers"), dropout=float(config.get("hidden_dropout_prob", 0.1)),
        attention_dropout=float(config.get("attention_probs_dropout_prob", 0.1)),
        activation=BERT_ACTIVATIONS[config.get("hidden_act", "gelu")], norm_first=False, positional="learned",
        max_positions=_positive(config, "max_position_embeddings"), layernorm_embedding=True,
        tie_output=bool(config.get("tie_word_embeddings", True)), output_bias=True, scale_embedding=False,
        layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)), pad_id=tokenizer.pad_id,
        bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, n_classes=len(labels), labels=labels,
        type_vocab_size=int(config.get("type_vocab_size", 2)), pooling="cls",
    )


# ----------------------------------------------------------------------------------------------- weights

_LAYER_PARTS = {  # inside encoder.layer.N.
    "attention.self.query.": "self_attn.q_proj.",
    "attention.self.key.": "self_attn.k_proj.",
    "attention.self.value.": "self_attn.v_proj.",
    "attention.output.dense.": "self_attn.out_proj.",
    "attention.output.LayerNorm.": "self_attn_block.norm.",
    "intermediate.dense.": "ff.fc1.",
    "output.dense.": "ff.fc2.",
    "output.LayerNorm.": "ff_block.norm.",
}
_OTHER_PARTS = {
    "embeddings.word_embeddings.": "embed.tokens.",
    "embeddings.position_embeddings.": "embed.positions.",
    "embeddings.token_type_embeddings.": "token_types.",
    "embeddings.LayerNorm.": "embed.norm.",
    "pooler.dense.": "pooler.",
    "cls.predictions.transform.dense.": "mlm_dense.",
    "cls.predictions.transform.LayerNorm.": "mlm_norm.",
    "cls.predictions.decoder.": "output_proj.",
    "classifier.": "classifier.",
}
_LAYER_KEY = re.compile(r"encoder\.layer\.(\d+)\.(.+\.)(\w+)")
_DROPPED = ("embeddings.position_ids", "cls.seq_relationship.")  # a buffer; the NSP head (BertForPreTraining)


def _our_name(name: str) -> str | None:
    """Our parameter name for an HF BERT one (without its "bert." prefix), or None if we have no place for it."""
    name = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", name))  # TF-era LayerNorm names
    layer = _LAYER_KEY.fullmatch(name)
    if layer and layer.group(2) in _LAYER_PARTS:
        index, part, leaf = layer.groups()
        return f"stack.layers.{index}.{_LAYER_PARTS[part]}{leaf}"
    if name == "cls.predictions.bias":
        return "output_proj.bias"
    for prefix, ours in _OTHER_PARTS.items():
        if name.startswith(prefix) and name.count(".") == prefix.count("."):
            return ours + name[len(prefix):]
    return None


def state_from_bert(state: dict[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """HF BERT parameter names -> ours. A tied decoder weight is dropped (our output projection is the token
    embedding); the NSP head is dropped with a warning; any other unknown name is a ValueError listing them."""
    ours: dict[str, Tensor] = {}
    unknown: list[str] = []
    for name, tensor in state.items():
        short = name.removeprefix("bert.")
        if short.startswith(_DROPPED):
            if short.startswith("cls.seq_relationship."):
                logger.warning("dropped %s: the next-sentence head has no place in our model", name)
            continue
        target = _our_name(short)
        if target is None:
            unknown.append(name)
        elif short == "cls.predictions.bias":  # the decoder's bias when tied to it; an untied decoder.bias rules
            ours.setdefault(target, tensor)
        else:
            ours[target] = tensor
    if unknown:
        raise ValueError(f"the checkpoint has weights our {config.n_layers}-layer BERT has no place for: "
                         f"{', '.join(sorted(unknown))}")
    if config.tie_output:
        ours.pop("output_proj.weight", None)
    return ours


def _load_weights(model: EncoderOnly, state: dict[str, Tensor], config: ModelConfig) -> None:
    missing, _ = apply_weights(model, state_from_bert(state, config), strict=False)
    required = [name for name in missing if not _OPTIONAL.fullmatch(name)]
    if required:
        raise ValueError(f"the checkpoint lacks weights our BERT needs: {', '.join(required)}; "
                         "pass a complete save_pretrained directory")
    if missing:
        logger.warning("not in the checkpoint, kept at their initialization: %s", ", ".join(sorted(missing)))


# ----------------------------------------------------------------------------------------------- files


def _has_mlm_head(state: dict[str, Tensor]) -> bool:
    return any(name.startswith("cls.predictions.") for name in state)


def load_bert_dir(hf_dir: Path, config: dict[str, Any]) -> tuple[EncoderOnly, Tokenizer, RunConfig]:
    """Model (eval mode), tokenizer and RunConfig (task classify for BertForSequenceClassification, else mlm)
    of a BERT save_pretrained directory; a sentence-transformers directory's pooling and normalization go into
    model.embed_pooling and model.embed_normalize, its max_seq_length into data.max_len."""
    from transformer.interop.huggingface import _read_weights

    architecture = check_bert(config)
    state = _read_weights(hf_dir)
    if _has_mlm_head(state) and BERT_ACTIVATIONS[config.get("hidden_act", "gelu")] != "gelu":
        raise ValueError(f"hidden_act={config['hidden_act']!r} with an MLM head: our MLM head's activation is GELU "
                         "(hidden_act='gelu'); import the encoder alone (BertModel) instead")
    tokenizer = bert_tokenizer(hf_dir, config)
    classify = architecture == "BertForSequenceClassification"
    model_config = bert_model_config(config, tokenizer, classify)
    sentence = sentence_settings(hf_dir)
    if sentence is not None:
        model_config = model_config.replace(embed_pooling=sentence.pooling, embed_normalize=sentence.normalize)
    model = build_model(model_config)
    _load_weights(model, state, model_config)
    if tokenizer.vocab_size > model_config.tgt_vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but config.json vocab_size="
                         f"{model_config.tgt_vocab_size}; the directory's tokenizer is not this model's")
    max_len = min(model_config.max_positions, sentence.max_seq_length if sentence and sentence.max_seq_length
                  else model_config.max_positions) - 2  # [CLS] and [SEP] come on top of data.max_len tokens
    run = RunConfig(
        model=model_config,
        data=DataConfig(max_len=max_len),  # fine-tuning names its data: --set data.corpus=tsv data.train_tsv=...
        train=TrainConfig(max_epochs=1), decode=DecodeConfig(), task="classify" if classify else "mlm",
    )
    return model.eval(), tokenizer, run


def export_bert(model_dir: Path, out: Path) -> Path:
    """Write our encoder-only model directory as a BERT save_pretrained directory (see hf_bert_export.py)."""
    from transformer.interop.hf_bert_export import export_bert as export

    return export(model_dir, out)
