"""Hugging Face T5 checkpoints (T5ForConditionalGeneration: the original T5 and v1.1 / flan-style) in our
EncoderDecoder, with identical weights; reached through `load_hf_dir` / `transformer import-hf`
(huggingface.py's FAMILY_CONVERTERS).

What T5 needs, each an option of our layers (ModelConfig; the defaults stay the paper's):

    positional="relative"   no absolute positions; each stack adds one learned bias per head and bucket of
                            distance key - query to every self-attention score (relative_buckets,
                            relative_max_distance; bidirectional in the encoder, causal in the decoder), the
                            bias T5 computes in its first layer and shares with the others
    norm="rms"              RMSNorm (no mean, no bias), pre-LN (norm_first) with a final norm in each stack
    attention_scale=1.0     scores Q K^T, not divided by sqrt(d_head)
    linear_bias=False       no biases in the attention and feed-forward linears
    gated_ffn, activation   feed_forward_proj "relu" (T5): relu; "gated-gelu" (v1.1, flan): (gelu_new(x W1) * x V) W2
    output_scale            tied output projection: the decoder output times d_model**-0.5 first (T5); an
                            lm_head of its own (v1.1) is used as it is
    bos_id = pad_id         decoding starts from <pad> (decoder_start_token_id); eos 1

Tokenizer: tokenizer.json (the Unigram file T5TokenizerFast writes) as it is, or else spiece.model converted
here (Unigram, pieces in their ids, then the <extra_id_N> sentinels, </s> appended to every source).
task_specific_params: when the config names exactly one translation task, its prefix ("translate English to
German: ") becomes decode.prefix, which `translate` and `evaluate` put before every source line.

Not reproduced: d_kv * num_heads != d_model (t5-11b style heads), dropout in training exactly as T5 places it
(after the final norm), and the decoding differences of huggingface.py (length penalty, forced EOS, pad ban).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from transformer.config import DataConfig, DecodeConfig, ModelConfig, RunConfig, TrainConfig
from transformer.data.tokenizer import Tokenizer
from transformer.interop.huggingface import positive_int
from transformer.model_dir import apply_weights
from transformer.models import EncoderDecoder, build_model

logger = logging.getLogger(__name__)

# feed_forward_proj's activation -> ours ("gated-gelu" means gelu_new, HF's T5Config says so)
T5_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_new", "silu": "swish", "swish": "swish"}


def _positive(config: dict[str, Any], key: str, default: int | None = None) -> int:
    return positive_int(config, key, "a T5ForConditionalGeneration", default)


def _feed_forward(config: dict[str, Any]) -> tuple[str, bool]:
    """(our activation, gated) for feed_forward_proj ("relu", "gated-gelu", ...)."""
    proj = str(config.get("feed_forward_proj", "relu"))
    parts = proj.split("-")
    gated = len(parts) == 2 and parts[0] == "gated"
    activation = "gelu_new" if proj == "gated-gelu" else parts[-1]
    if len(parts) > 2 or (len(parts) == 2 and not gated) or activation not in T5_ACTIVATIONS:
        raise ValueError(f"config.json feed_forward_proj={proj!r} is not supported; use 'relu', 'gated-gelu' or "
                         f"[gated-]ACT with ACT one of {sorted(T5_ACTIVATIONS)}")
    return T5_ACTIVATIONS[activation], gated


def model_config_from_t5(config: dict[str, Any], tied: bool = True) -> ModelConfig:
    """Our ModelConfig for a T5 config dict; `tied`: the checkpoint has no lm_head of its own."""
    architectures = config.get("architectures") or ["T5ForConditionalGeneration"]
    if "T5ForConditionalGeneration" not in architectures or config.get("is_encoder_decoder") is False:
        raise ValueError(f"config.json architectures={architectures}: import-hf reads T5ForConditionalGeneration "
                         "(the encoder-decoder with its LM head) only")
    d_model, heads = _positive(config, "d_model"), _positive(config, "num_heads")
    d_kv = _positive(config, "d_kv", d_model // heads)
    if d_kv * heads != d_model:
        raise ValueError(f"config.json d_kv={d_kv} * num_heads={heads} != d_model={d_model}: our attention "
                         "splits d_model into the heads, so only d_kv = d_model / num_heads imports")
    activation, gated = _feed_forward(config)
    scale_outputs = config.get("scale_decoder_outputs", config.get("tie_word_embeddings", True) is not False)
    pad_id = int(config.get("pad_token_id", 0))
    eos = config.get("eos_token_id", 1)
    dropout = float(config.get("dropout_rate", 0.1))
    layers = _positive(config, "num_layers")
    decoder_layers = layers if config.get("num_decoder_layers") is None else _positive(config, "num_decoder_layers")
    return ModelConfig(
        src_vocab_size=_positive(config, "vocab_size"), tgt_vocab_size=_positive(config, "vocab_size"),
        d_model=d_model, n_heads=heads, d_ff=_positive(config, "d_ff"),
        n_encoder_layers=layers, n_decoder_layers=decoder_layers,
        dropout=dropout, attention_dropout=dropout, activation_dropout=dropout,
        activation=activation, gated_ffn=gated, norm="rms", norm_first=True, linear_bias=False,
        attention_scale=1.0, positional="relative",
        relative_buckets=_positive(config, "relative_attention_num_buckets", 32),
        relative_max_distance=_positive(config, "relative_attention_max_distance", 128),
        max_positions=int(config.get("n_positions") or 512),
        share_embeddings=True, tie_output=tied, output_bias=False, scale_embedding=False,
        output_scale=d_model**-0.5 if scale_outputs else 1.0,
        layer_norm_eps=float(config.get("layer_norm_epsilon", 1e-6)),
        pad_id=pad_id, eos_id=int(eos[0] if isinstance(eos, list) else eos),
        bos_id=int(config.get("decoder_start_token_id", pad_id)),
    )


# ----------------------------------------------------------------------------------------------- weights

_BLOCK_KEY = re.compile(r"(encoder|decoder)\.block\.(\d+)\.layer\.(\d)\.(\w+)\.(.+)")
_SUBLAYERS = {  # (stack, index of the sublayer in the block) -> (T5's module, ours, our residual block)
    ("encoder", "0"): ("SelfAttention", "self_attn", "self_attn_block"),
    ("encoder", "1"): ("DenseReluDense", "ff", "ff_block"),
    ("decoder", "0"): ("SelfAttention", "self_attn", "self_attn_block"),
    ("decoder", "1"): ("EncDecAttention", "cross_attn", "cross_attn_block"),
    ("decoder", "2"): ("DenseReluDense", "ff", "ff_block"),
}
_LINEARS = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj",
            "wi": "fc1", "wi_0": "fc1", "wi_1": "fc1_linear", "wo": "fc2"}


def _block_name(match: re.Match[str]) -> str | None:
    """Our name of one T5 block parameter; None for one to drop (a cross-attention bias HF ignores too), ""
    for one we have no place for."""
    stack, index, sublayer, module, rest = match.groups()
    if (stack, sublayer) not in _SUBLAYERS:
        return ""
    theirs, ours, block = _SUBLAYERS[stack, sublayer]
    if module == "layer_norm" and rest == "weight":
        return f"{stack}.layers.{index}.{block}.norm.weight"
    if module != theirs:
        return ""
    linear, _, param = rest.partition(".")
    if linear == "relative_attention_bias" and param == "weight":
        if ours == "cross_attn":
            return None
        return f"{stack}.position_bias.embedding.weight" if index == "0" else ""
    if linear in _LINEARS and param == "weight":
        return f"{stack}.layers.{index}.{ours}.{_LINEARS[linear]}.weight"
    return ""


def state_from_t5(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """T5 parameter names -> ours; an unknown name is a ValueError listing them all."""
    ours: dict[str, Tensor] = {}
    unknown: list[str] = []
    for name, tensor in state.items():
        match = _BLOCK_KEY.fullmatch(name)
        if match:
            target = _block_name(match)
            if target:
                ours[target] = tensor
            elif target == "":
                unknown.append(name)
        elif name in ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            ours.setdefault("tgt_embed.tokens.weight", state.get("shared.weight", tensor))
        elif name in ("encoder.final_layer_norm.weight", "decoder.final_layer_norm.weight"):
            ours[f"{name.split('.')[0]}.final_norm.weight"] = tensor
        elif name == "lm_head.weight":
            ours["output_proj.weight"] = tensor
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"the T5 checkpoint has weights our T5 layout has no place for: {', '.join(sorted(unknown))}")
    return ours


def _untied(state: dict[str, Tensor]) -> bool:
    """Whether the checkpoint's lm_head is a matrix of its own (v1.1), not the shared embedding."""
    head, shared = state.get("lm_head.weight"), state.get("shared.weight")
    return head is not None and (shared is None or not torch.equal(head, shared))


def _convert(config: dict[str, Any], state: dict[str, Tensor]) -> tuple[EncoderDecoder, ModelConfig]:
    untied = _untied(state)
    if not untied:
        state = {name: tensor for name, tensor in state.items() if name != "lm_head.weight"}
    ours = model_config_from_t5(config, tied=not untied)
    model = build_model(ours)
    apply_weights(model, state_from_t5(state), strict=True)
    return model.eval(), ours


def model_from_t5(hf_model: Any) -> EncoderDecoder:
    """Our EncoderDecoder (eval mode) with the weights of an in-memory T5ForConditionalGeneration."""
    state = dict(hf_model.state_dict())
    if hf_model.lm_head.weight is hf_model.shared.weight:
        state.pop("lm_head.weight", None)
    return _convert(hf_model.config.to_dict(), state)[0]


# ----------------------------------------------------------------------------------------------- files


def t5_tokenizer(hf_dir: Path, model: ModelConfig) -> Tokenizer:
    """tokenizer.json as it is, or spiece.model converted (marian_tokenizer.spm_unigram_tokenizer)."""
    ids = dict(pad_id=model.pad_id, bos_id=model.bos_id, eos_id=model.eos_id)
    if (hf_dir / "tokenizer.json").is_file():
        from tokenizers import Tokenizer as HFTokenizer

        hf = HFTokenizer.from_file(str(hf_dir / "tokenizer.json"))
        hf.no_padding()
        hf.no_truncation()
        return Tokenizer(hf, **ids)
    if (hf_dir / "spiece.model").is_file():
        from transformer.interop.marian_tokenizer import spm_unigram_tokenizer

        settings_file = hf_dir / "tokenizer_config.json"
        settings = json.loads(settings_file.read_text(encoding="utf-8")) if settings_file.is_file() else {}
        extra = int(settings.get("extra_ids", 100))
        sentinels = [f"<extra_id_{i}>" for i in range(extra - 1, -1, -1)]  # <extra_id_0> gets the last id
        return Tokenizer(spm_unigram_tokenizer(hf_dir / "spiece.model", sentinels, "</s>", model.eos_id), **ids)
    raise FileNotFoundError(f"{hf_dir} has no tokenizer: a T5 directory needs tokenizer.json or spiece.model "
                            "(save the tokenizer too: tokenizer.save_pretrained(DIR))")


def task_prefix(config: dict[str, Any]) -> str:
    """The prefix of the one translation task task_specific_params names, else "" (none or several)."""
    tasks = config.get("task_specific_params") or {}
    prefixes = {name: task.get("prefix", "") for name, task in tasks.items()
                if name.startswith("translation") and isinstance(task, dict)}
    if len(prefixes) == 1:
        return next(iter(prefixes.values()))
    if prefixes:
        logger.info("T5 tasks %s: pass translate --prefix, or import-hf --set decode.prefix=...", prefixes)
    return ""


def _decode_config(hf_dir: Path, config: dict[str, Any]) -> DecodeConfig:
    from transformer.interop.huggingface import _decode_config as hf_decode_config
    from transformer.interop.huggingface import _generation_settings

    decode = hf_decode_config(_generation_settings(hf_dir, config), int(config.get("pad_token_id", 0)))
    return DecodeConfig(beam=decode.beam, alpha=decode.alpha, prefix=task_prefix(config))


def load_t5_dir(hf_dir: Path, config: dict[str, Any]) -> tuple[EncoderDecoder, Tokenizer, RunConfig]:
    """FAMILY_CONVERTERS["t5"]: (model in eval mode, tokenizer, RunConfig with task translation)."""
    from transformer.interop.huggingface import _read_weights

    model, model_config = _convert(config, _read_weights(hf_dir))
    tokenizer = t5_tokenizer(hf_dir, model_config)
    if tokenizer.vocab_size > model_config.src_vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
                         f"{model_config.src_vocab_size}; pass the tokenizer saved with this checkpoint")
    run = RunConfig(model=model_config, data=DataConfig(max_len=model_config.max_positions),
                    train=TrainConfig(max_epochs=1), decode=_decode_config(hf_dir, config), task="translation")
    return model, tokenizer, run


__all__ = ["load_t5_dir", "model_config_from_t5", "model_from_t5", "state_from_t5", "t5_tokenizer", "task_prefix"]
