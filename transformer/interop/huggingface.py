"""Run Hugging Face translation checkpoints (Marian, BART) in our EncoderDecoder, with identical weights.

    model_from_hf(hf_model)        an in-memory MarianMTModel / BartForConditionalGeneration -> EncoderDecoder
    load_hf_dir(path)              a save_pretrained directory, or a Hub id (interop/hub.py: from the Hugging
                                   Face cache, downloaded when missing) -> (EncoderDecoder, Tokenizer, RunConfig)
    import_hf(hf_dir, out_dir)     ... written as one of our model directories (`transformer import-hf`)

Nothing here imports `transformers`: a directory is read from config.json, model.safetensors (or
pytorch_model.bin, loaded with weights_only=True) and its tokenizer files. What each model type needs is an
option of our own layers (ModelConfig):

    Marian: sinusoidal positions with sines then cosines (sinusoidal_interleaved=False), embeddings scaled
            by sqrt(d_model) when scale_embedding, swish/gelu/relu, shared or separate source and target
            embeddings, decoding starts with <pad> (bos_id = pad_id), eos 0, pad = vocab size - 1.
    BART:   learned positions stored from row 2 (position_offset=2), a LayerNorm on the embeddings
            (layernorm_embedding), GELU, decoding starts with </s> (bos_id = eos_id).
    Both:   post-LN layers, final_logits_bias (output_bias), tied or untied output projection.

Decoding differences from `generate` (the parity tests use the settings that make the two equal):
- Length penalty. Ours is GNMT's, score = log P / ((5 + n) / 6) ** alpha; Hugging Face's is
  log P / n ** length_penalty. n counts the generated tokens with the EOS in both. The two rank hypotheses
  the same only when alpha = length_penalty = 0 (raw log-probability); then beam search gives the same
  tokens as generate(num_beams=K, length_penalty=0.0, early_stopping=False). import-hf copies
  length_penalty into decode.alpha, the nearest analogue, not an equivalent.
- We never produce <pad> (nor BOS unless it is EOS) and renormalize without it; generate bans tokens
  only through bad_words_ids (OPUS-MT configs ban <pad>), after the softmax, without renormalizing.
- At the length limit generate forces EOS (forced_eos_token_id); we stop without one. Our limit is
  max_len_a * source length + max_len_b tokens (EOS included, source with its </s>); generate's is
  max_length / max_new_tokens.
- Not reproduced, and logged as a warning on import: forced_bos_token_id, no_repeat_ngram_size,
  repetition_penalty, min_length, early_stopping=True, sampling.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from transformer.config import (
    DataConfig,
    DecodeConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    to_dict,
)
from transformer.data.tokenizer import Tokenizer
from transformer.interop.hub import resolve_hf_dir
from transformer.model_dir import apply_weights, atomic_write_text, save_weights
from transformer.models import EncoderDecoder, build_model
from transformer.nn.positional import sinusoidal_table

logger = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("marian", "bart")
# The other model types, each converted by a module of its own: model_type -> "module:function", imported when
# used; the function takes (hf_dir: Path, config: dict from config.json) and returns (model, Tokenizer or None,
# RunConfig with its task), as load_hf_dir does.
FAMILY_CONVERTERS: dict[str, str] = {
    "bert": "transformer.interop.hf_bert:load_bert_dir",
    "gpt2": "transformer.interop.hf_gpt2:load_gpt2_dir",
    "t5": "transformer.interop.hf_t5:load_t5_dir",
    "vit": "transformer.interop.hf_vit:load_vit_dir",
}
HF_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "swish": "swish", "silu": "swish"}  # HF name -> ours
# Keys of older configs (converted from fairseq/Marian) that describe variants the HF classes do not build.
_MUST_BE = {
    "marian": {"normalize_before": False, "add_final_layer_norm": False, "add_bias_logits": False,
               "normalize_embedding": False},
    "bart": {"normalize_before": False, "add_final_layer_norm": False, "add_bias_logits": False,
             "normalize_embedding": True, "static_position_embeddings": False},
}


# ------------------------------------------------------------------------------------------------ config


def positive_int(config: dict[str, Any], key: str, classes: str, default: int | None = None) -> int:
    """config.json's `key` (else `default`), refused unless a positive integer; `classes` names what the
    config.json should belong to, for the message."""
    value = config.get(key, default)
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"config.json {key}={value!r}: a positive integer is needed (is this the save_pretrained "
                         f"config.json of {classes}?)")
    return value


def _required(config: dict[str, Any], key: str) -> int:
    return positive_int(config, key, "a MarianMTModel or BartForConditionalGeneration")


def _single_id(config: dict[str, Any], key: str) -> int:
    value = config.get(key)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, int):
        raise ValueError(f"config.json {key}={value!r}: a single token id is needed")
    return value


def _same(config: dict[str, Any], encoder_key: str, decoder_key: str) -> int:
    encoder, decoder = _required(config, encoder_key), _required(config, decoder_key)
    if encoder != decoder:
        raise ValueError(f"config.json {encoder_key}={encoder} != {decoder_key}={decoder}: our layers use one "
                         "value for both stacks; only checkpoints with equal encoder and decoder sizes import")
    return encoder


def check_supported(config: dict[str, Any]) -> str:
    """The model_type of an HF config dict, after refusing what we cannot run (ValueError says what is supported)."""
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"model_type={model_type!r} is not supported; import-hf reads "
                         f"{[*SUPPORTED_MODEL_TYPES, *FAMILY_CONVERTERS]} (MarianMTModel, e.g. the OPUS-MT models, "
                         "BartForConditionalGeneration, and the classes the other types' modules name)")
    unsupported = [f"{key}={config[key]!r} (supported: {expected!r})"
                   for key, expected in _MUST_BE[model_type].items() if key in config and config[key] != expected]
    activation = config.get("activation_function", "gelu")
    if activation not in HF_ACTIVATIONS:
        unsupported.append(f"activation_function={activation!r} (supported: {sorted(HF_ACTIVATIONS)})")
    if not isinstance(config.get("scale_embedding", False), bool):
        unsupported.append(f"scale_embedding={config['scale_embedding']!r} (supported: true or false)")
    if unsupported:
        raise ValueError(f"this {model_type} checkpoint uses options we do not support: {'; '.join(unsupported)}. "
                         f"Supported: post-LN {model_type} layers with relu, gelu or swish, no final LayerNorm")
    return model_type


def model_config_from_hf(config: dict[str, Any], output_bias: bool = False) -> ModelConfig:
    """Our ModelConfig for an HF Marian or BART config dict (`config.to_dict()` or config.json)."""
    model_type = check_supported(config)
    vocab = _required(config, "vocab_size")
    pad_id = _single_id(config, "pad_token_id")
    eos_id = _single_id(config, "eos_token_id")
    start = config.get("decoder_start_token_id")
    common = dict(
        d_model=_required(config, "d_model"),
        n_heads=_same(config, "encoder_attention_heads", "decoder_attention_heads"),
        d_ff=_same(config, "encoder_ffn_dim", "decoder_ffn_dim"),
        n_encoder_layers=_required(config, "encoder_layers"),
        n_decoder_layers=_required(config, "decoder_layers"),
        dropout=float(config.get("dropout", 0.1)),
        attention_dropout=float(config.get("attention_dropout", 0.0)),
        activation_dropout=float(config.get("activation_dropout", 0.0)),
        activation=HF_ACTIVATIONS[config.get("activation_function", "gelu")],
        norm_first=False,
        max_positions=int(config.get("max_position_embeddings", 1024)),
        scale_embedding=bool(config.get("scale_embedding", False)),
        tie_output=bool(config.get("tie_word_embeddings", True)),
        output_bias=output_bias,
        layer_norm_eps=1e-5,
        pad_id=pad_id,
        eos_id=eos_id,
    )
    if model_type == "marian":
        shared = bool(config.get("share_encoder_decoder_embeddings", True))
        return ModelConfig(
            src_vocab_size=vocab, tgt_vocab_size=vocab if shared else int(config.get("decoder_vocab_size") or vocab),
            positional="sinusoidal", sinusoidal_interleaved=False, share_embeddings=shared,
            bos_id=pad_id if start is None else int(start), **common,
        )
    return ModelConfig(
        src_vocab_size=vocab, tgt_vocab_size=vocab, positional="learned", position_offset=2,
        layernorm_embedding=True, share_embeddings=True, bos_id=eos_id if start is None else int(start), **common,
    )


# ----------------------------------------------------------------------------------------------- weights

_LAYER_PARTS = {  # inside model.{encoder,decoder}.layers.N.
    "self_attn.": "self_attn.",
    "self_attn_layer_norm.": "self_attn_block.norm.",
    "encoder_attn.": "cross_attn.",
    "encoder_attn_layer_norm.": "cross_attn_block.norm.",
    "fc1.": "ff.fc1.",
    "fc2.": "ff.fc2.",
    "final_layer_norm.": "ff_block.norm.",
}
_LAYER_KEY = re.compile(r"model\.(encoder|decoder)\.layers\.(\d+)\.(\w+\.)(.+)")
_STACK_KEY = re.compile(r"model\.(encoder|decoder)\.(embed_tokens|embed_positions|layernorm_embedding)\.(.+)")


def state_from_hf(state: dict[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """HF parameter names -> ours. Tied tensors are given once; Marian's fixed sinusoid table is checked
    against the formula and dropped. An unknown name is a ValueError listing them all."""
    ours: dict[str, Tensor] = {}
    unknown: list[str] = []
    side = {"encoder": "src_embed", "decoder": "tgt_embed"}
    for name, tensor in state.items():
        layer, stack = _LAYER_KEY.fullmatch(name), _STACK_KEY.fullmatch(name)
        if layer and layer.group(3) in _LAYER_PARTS:
            stack_name, index, part, rest = layer.groups()
            ours[f"{stack_name}.layers.{index}.{_LAYER_PARTS[part]}{rest}"] = tensor
        elif stack and stack.group(2) == "embed_positions" and config.positional == "sinusoidal":
            _check_sinusoids(name, tensor)
        elif stack:
            stack_name, module, rest = stack.groups()
            part = {"embed_tokens": "tokens", "embed_positions": "positions", "layernorm_embedding": "norm"}[module]
            ours[f"{side[stack_name]}.{part}.{rest}"] = tensor
        elif name == "model.shared.weight":
            ours.setdefault("tgt_embed.tokens.weight", tensor)
        elif name == "lm_head.weight":
            ours["output_proj.weight"] = tensor
        elif name == "final_logits_bias":
            ours["output_proj.bias"] = tensor.reshape(-1)
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"the checkpoint has weights our {config.n_encoder_layers}+{config.n_decoder_layers}-layer "
                         f"post-LN model has no place for: {', '.join(sorted(unknown))}")
    if config.share_embeddings:  # one tensor: keep the decoder's (HF ties all of them to model.shared)
        ours.pop("src_embed.tokens.weight", None)
    if config.tie_output:
        ours.pop("output_proj.weight", None)
    return ours


def _check_sinusoids(name: str, table: Tensor) -> None:
    expected = sinusoidal_table(table.size(0), table.size(1), interleaved=False)
    if not torch.allclose(table.float(), expected, atol=1e-4):
        raise ValueError(f"{name} is not the sinusoid table Marian uses (sines then cosines); "
                         "this checkpoint's positions cannot be represented by positional='sinusoidal'")


def _convert(config: dict[str, Any], state: dict[str, Tensor]) -> tuple[EncoderDecoder, ModelConfig]:
    ours = model_config_from_hf(config, output_bias="final_logits_bias" in state)
    source, target = (state.get(f"model.{side}.embed_tokens.weight") for side in ("encoder", "decoder"))
    if ours.share_embeddings and source is not None and target is not None and not torch.equal(source, target):
        ours = ours.replace(share_embeddings=False)  # one vocabulary, two tables (transformers 5, untied)
    model = build_model(ours)
    apply_weights(model, state_from_hf(state, ours), strict=True)
    return model.eval(), ours


def model_from_hf(hf_model: Any) -> EncoderDecoder:
    """Our EncoderDecoder (eval mode) with the weights of an in-memory HF MarianMTModel or
    BartForConditionalGeneration (read through its `.config` and `.state_dict()`)."""
    return _convert(hf_model.config.to_dict(), dict(hf_model.state_dict()))[0]


# ----------------------------------------------------------------------------------------------- files


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; pass a directory written by save_pretrained")
    return json.loads(path.read_text(encoding="utf-8"))


def _read_weights(hf_dir: Path) -> dict[str, Tensor]:
    safetensors_file, bin_file = hf_dir / "model.safetensors", hf_dir / "pytorch_model.bin"
    if safetensors_file.is_file():
        import safetensors.torch

        return safetensors.torch.load_file(str(safetensors_file), device="cpu")
    if bin_file.is_file():
        return torch.load(bin_file, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{hf_dir} holds neither model.safetensors nor pytorch_model.bin "
                            "(sharded checkpoints are not supported)")


def _read_tokenizer(hf_dir: Path, model_type: str, model: ModelConfig) -> Tokenizer:
    ids = dict(pad_id=model.pad_id, bos_id=model.bos_id, eos_id=model.eos_id)
    if model_type == "marian" and (hf_dir / "source.spm").is_file():
        from transformer.interop.marian_tokenizer import marian_tokenizer

        return marian_tokenizer(hf_dir, **ids)
    if (hf_dir / "tokenizer.json").is_file():
        from tokenizers import Tokenizer as HFTokenizer

        hf = HFTokenizer.from_file(str(hf_dir / "tokenizer.json"))
        hf.no_padding()
        hf.no_truncation()
        return Tokenizer(hf, **ids)
    wanted = "source.spm, target.spm and vocab.json" if model_type == "marian" else "tokenizer.json"
    raise FileNotFoundError(f"{hf_dir} has no tokenizer: a {model_type} directory needs {wanted} "
                            "(save the tokenizer too: tokenizer.save_pretrained(DIR))")


def _generation_settings(hf_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    path = hf_dir / "generation_config.json"
    return _read_json(path) if path.is_file() else config


def _decode_config(settings: dict[str, Any], pad_id: int) -> DecodeConfig:
    ignored = {key: settings[key] for key, default in (
        ("forced_bos_token_id", None), ("no_repeat_ngram_size", 0), ("repetition_penalty", 1.0),
        ("min_length", 0), ("early_stopping", False), ("do_sample", False),
    ) if settings.get(key, default) not in (default, None)}
    if settings.get("bad_words_ids") not in (None, [[pad_id]]):
        ignored["bad_words_ids"] = settings["bad_words_ids"]
    if ignored:
        logger.warning("generation settings not reproduced by our decoding: %s", ignored)
    return DecodeConfig(beam=int(settings.get("num_beams") or 1),
                        alpha=max(0.0, float(settings.get("length_penalty", 1.0))))


def load_hf_dir(path: str | Path) -> tuple[Any, Tokenizer | None, RunConfig]:
    """Model (eval mode), tokenizer and a RunConfig from a Hugging Face directory (save_pretrained), or from a
    Hub id such as "Helsinki-NLP/opus-mt-de-en" (its snapshot in the Hugging Face cache; see interop/hub.py).

    The RunConfig's decode section copies num_beams and length_penalty (as alpha) from the generation
    settings; its data section is the default (Bible German -> English) with max_len = the model's
    max_position_embeddings; its train section is a placeholder.
    """
    hf_dir = resolve_hf_dir(path)  # a directory as it is; a Hub id as its snapshot in the cache
    config = _read_json(hf_dir / "config.json")
    if config.get("model_type") in FAMILY_CONVERTERS:
        module, function = FAMILY_CONVERTERS[config["model_type"]].split(":")
        return getattr(importlib.import_module(module), function)(hf_dir, config)
    model_type = check_supported(config)
    model, model_config = _convert(config, _read_weights(hf_dir))
    tokenizer = _read_tokenizer(hf_dir, model_type, model_config)
    if (tokenizer.vocab_size, tokenizer.target_vocab_size) != (model_config.src_vocab_size,
                                                                model_config.tgt_vocab_size):
        logger.warning("tokenizer vocabularies (%d source, %d target) differ from the model's (%d, %d)",
                       tokenizer.vocab_size, tokenizer.target_vocab_size,
                       model_config.src_vocab_size, model_config.tgt_vocab_size)
    run = RunConfig(
        model=model_config,
        data=DataConfig(max_len=model_config.max_positions),
        train=TrainConfig(max_epochs=1),
        decode=_decode_config(_generation_settings(hf_dir, config), model_config.pad_id),
    )
    return model, tokenizer, run


def import_hf(hf_dir: str | Path, out_dir: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Write `load_hf_dir(hf_dir)` as our model directory `out_dir`: config.yaml, model.safetensors,
    tokenizer.json (and target_tokenizer.json for Marian). `overrides` ("decode.beam=4", "data.src=e")
    change the written config.yaml's data and decode sections. Returns the written config."""
    out = Path(out_dir)
    if (out / "model.safetensors").exists() or (out / "config.yaml").exists():
        raise ValueError(f"{out} already holds a model; choose another --out or remove it first")
    model, tokenizer, run = load_hf_dir(hf_dir)
    if overrides:
        tree = {name: to_dict(getattr(run, name)) for name in ("model", "data", "train", "decode")}
        changed = apply_overrides(tree, overrides)
        for key in changed["model"]:
            if changed["model"][key] != tree["model"][key]:
                raise ValueError(f"--set model.{key}: the model section comes from the checkpoint; "
                                 "only data.* and decode.* can be changed")
        run = RunConfig.from_dict({**changed, "task": run.task})  # an import's task (lm, mlm, ...) stays
    out.mkdir(parents=True, exist_ok=True)
    save_weights(model, out / "model.safetensors")
    if tokenizer is not None:  # an image model has none
        tokenizer.save(out)
    atomic_write_text(out / "config.yaml", run.to_yaml())
    logger.info("imported %s into %s", hf_dir, out)
    return run
