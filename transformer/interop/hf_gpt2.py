"""GPT-2 (Hugging Face GPT2LMHeadModel) <-> our decoder-only model, with identical weights and logits.

    load_gpt2_dir(hf_dir, config)   a save_pretrained directory -> (DecoderOnly, Tokenizer, RunConfig task lm);
                                    reached through huggingface.load_hf_dir / `transformer import-hf`
    export_gpt2(model_dir, out)     one of our decoder-only model directories -> a save_pretrained directory
                                    that GPT2LMHeadModel.from_pretrained loads (`transformer export-hf`)

GPT-2 is options of our layers (ModelConfig), not code of its own:

    pre-LN layers (norm_first) ending with a LayerNorm (ln_f), eps = layer_norm_epsilon; learned positions
    (wpe, positional='learned', no row offset); token embeddings not scaled by sqrt(d) (scale_embedding=False);
    GELU's tanh approximation (gelu_new); the LM head tied to wte unless tie_word_embeddings is false.
    HF's Conv1D stores c_attn, c_proj and c_fc as (in, out): ours are nn.Linear (out, in), so each is
    transposed, and the fused c_attn (D, 3D) is split into our q_proj, k_proj and v_proj.

Special ids. GPT-2 starts and ends a text with <|endoftext|> (bos_token_id = eos_token_id) and has no pad
token. Ours: bos = eos = <|endoftext|>, so a segment is scored as <|endoftext|> text <|endoftext|>, and
`generate` prepends it to the prompt. Our batches need a pad id distinct from eos, so import adds a token
"<pad>" after the tokenizer's last id: when that id is past the model's vocabulary (vocab_size = the
tokenizer's size, as in GPT-2 itself), the model gets one more embedding row (zeros) and a fixed logit
model.pad_logit = PAD_LOGIT_BIAS for it (an untrained output bias, 0 for every real token, so fine-tuning
keeps GPT-2's architecture): the softmax over the real tokens, and every perplexity, is GPT-2's, and
decoding never draws <pad>. If the tokenizer is smaller than vocab_size, <pad> takes the first unused row as
it is (the model's own logit, as HF computes it). A config.json pad_token_id other than eos (a fine-tune that
added a pad token) is used as it is. export_gpt2 removes the added row, logit and token again.

Not reproduced: GPT-2 checkpoints with scale_attn_by_inverse_layer_idx, scale_attn_weights=false or
add_cross_attention (refused, naming the key); embd_pdrop != resid_pdrop (ours has one dropout: resid_pdrop
is kept); reorder_and_upcast_attn is accepted: it changes only the precision of attention scores, and ours
runs imported models in fp32. The double-heads and classification variants (their extra weights are refused).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from transformer.config import DataConfig, DecodeConfig, ModelConfig, RunConfig, TrainConfig
from transformer.data.tokenizer import Tokenizer
from transformer.interop.huggingface import _read_weights
from transformer.model_dir import apply_weights
from transformer.models import build_model
from transformer.models.decoder_only import DecoderOnly

logger = logging.getLogger(__name__)

PAD_TOKEN = "<pad>"
PAD_LOGIT_BIAS = -1.0e4  # exp(-1e4 - max logit) is 0 in fp32: <pad> takes no probability
# HF activation_function -> ours (gelu_pytorch_tanh and gelu_new are the same tanh approximation)
GPT2_ACTIVATIONS = {"gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "gelu": "gelu", "relu": "relu",
                    "silu": "swish", "swish": "swish"}
_EXPORT_ACTIVATIONS = {"gelu_new": "gelu_new", "gelu": "gelu", "relu": "relu", "swish": "silu"}  # ours -> HF
_MUST_BE = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False}
_SUPPORTED = ("pre-LN GPT-2 layers with learned positions, attention scaled by 1/sqrt(d_head), no cross-attention, "
              f"activation one of {sorted(GPT2_ACTIVATIONS)}")
# Per layer: HF Conv1D (in, out) names -> our nn.Linear (out, in) names, and the LayerNorms.
_CONV1D = {"attn.c_proj": "self_attn.out_proj", "mlp.c_fc": "ff.fc1", "mlp.c_proj": "ff.fc2"}
_NORMS = {"ln_1": "self_attn_block.norm", "ln_2": "ff_block.norm"}
_QKV = ("q_proj", "k_proj", "v_proj")
_TOP = {"wte.weight": "embed.tokens.weight", "wpe.weight": "embed.positions.weight",
        "ln_f.weight": "stack.final_norm.weight", "ln_f.bias": "stack.final_norm.bias",
        "lm_head.weight": "output_proj.weight"}  # outside the layers: HF name (without "transformer.") -> ours
_LAYER_KEY = re.compile(r"h\.(\d+)\.(\w+(?:\.\w+)?)\.(weight|bias)")


# ------------------------------------------------------------------------------------------------ import


def check_gpt2_config(config: dict[str, Any]) -> None:
    """Refuse a GPT-2 config.json whose options our layers cannot express (ValueError naming each one)."""
    unsupported = [f"{key}={config[key]!r} (supported: {expected!r})"
                   for key, expected in _MUST_BE.items() if key in config and config[key] != expected]
    activation = config.get("activation_function", "gelu_new")
    if activation not in GPT2_ACTIVATIONS:
        unsupported.append(f"activation_function={activation!r} (supported: {sorted(GPT2_ACTIVATIONS)})")
    for key in ("n_embd", "n_layer", "n_head", "vocab_size", "n_positions"):
        if not isinstance(config.get(key), int) or config[key] <= 0:
            unsupported.append(f"{key}={config.get(key)!r} (a positive integer is needed)")
    if unsupported:
        raise ValueError(f"this gpt2 checkpoint uses options we do not support: {'; '.join(unsupported)}. "
                         f"Supported: {_SUPPORTED}")
    if float(config.get("embd_pdrop", 0.1)) != float(config.get("resid_pdrop", 0.1)):
        logger.warning("embd_pdrop=%s differs from resid_pdrop=%s: our model has one dropout rate for both; "
                       "resid_pdrop is used (this matters for fine-tuning only)",
                       config.get("embd_pdrop"), config.get("resid_pdrop"))


def _token_id(config: dict[str, Any], key: str, default: int | None) -> int | None:
    value = config.get(key, default)
    if isinstance(value, list):
        value = value[0] if value else None
    if value is not None and (not isinstance(value, int) or value < 0):
        raise ValueError(f"config.json {key}={value!r}: a single non-negative token id is needed")
    return value


def gpt2_model_config(config: dict[str, Any], vocab_size: int, pad_id: int, pad_logit: float | None) -> ModelConfig:
    """Our decoder-only ModelConfig for a GPT-2 config.json (after check_gpt2_config)."""
    eos = _token_id(config, "eos_token_id", 50256)
    bos = _token_id(config, "bos_token_id", eos)
    if eos is None or bos is None:
        raise ValueError("config.json has no eos_token_id: set it to the id of <|endoftext|> (50256 in GPT-2)")
    d_model = config["n_embd"]
    return ModelConfig(
        type="decoder_only", src_vocab_size=vocab_size, tgt_vocab_size=vocab_size, d_model=d_model,
        n_heads=config["n_head"], d_ff=config.get("n_inner") or 4 * d_model, n_layers=config["n_layer"],
        dropout=float(config.get("resid_pdrop", 0.1)), attention_dropout=float(config.get("attn_pdrop", 0.1)),
        activation_dropout=0.0, activation=GPT2_ACTIVATIONS[config.get("activation_function", "gelu_new")],
        norm_first=True, positional="learned", max_positions=config["n_positions"], scale_embedding=False,
        tie_output=bool(config.get("tie_word_embeddings", True)), pad_logit=pad_logit,
        layer_norm_eps=float(config.get("layer_norm_epsilon", 1e-5)), pad_id=pad_id, bos_id=bos, eos_id=eos,
    )


def state_from_gpt2(state: dict[str, Tensor], n_layers: int) -> dict[str, Tensor]:
    """GPT-2 parameter names and layouts -> ours. Unknown names are a ValueError listing them all."""
    ours: dict[str, Tensor] = {}
    unknown: list[str] = []
    for full_name, tensor in state.items():
        name = full_name.removeprefix("transformer.")
        layer = _LAYER_KEY.fullmatch(name)
        if name in _TOP:
            ours[_TOP[name]] = tensor
        elif re.fullmatch(r"h\.\d+\.attn\.(masked_)?bias", name):
            continue  # the causal-mask buffers older checkpoints saved
        elif layer and int(layer.group(1)) < n_layers and layer.group(2) in (*_CONV1D, *_NORMS, "attn.c_attn"):
            index, part, kind = layer.groups()
            prefix = f"stack.layers.{index}."
            value = tensor.t() if kind == "weight" and part not in _NORMS else tensor  # Conv1D (in, out) -> (out, in)
            if part == "attn.c_attn":
                for proj, chunk in zip(_QKV, value.chunk(3, dim=0), strict=True):
                    ours[f"{prefix}self_attn.{proj}.{kind}"] = chunk.contiguous()
            else:
                ours[f"{prefix}{(_CONV1D | _NORMS)[part]}.{kind}"] = value.contiguous()
        else:
            unknown.append(full_name)
    if unknown:
        raise ValueError(f"the checkpoint has weights a {n_layers}-layer GPT2LMHeadModel does not have: "
                         f"{', '.join(sorted(unknown))} (only GPT2LMHeadModel / GPT2Model checkpoints import)")
    return ours


def _gpt2_tokenizer(hf_dir: Path, config: dict[str, Any]) -> tuple[Any, int]:
    """The directory's tokenizer.json and the pad id: config's pad_token_id when it is not eos, else the id of
    a "<pad>" token added after the last one."""
    from tokenizers import Tokenizer as HFTokenizer

    path = hf_dir / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a gpt2 directory needs tokenizer.json "
                                "(save the fast tokenizer too: GPT2TokenizerFast.save_pretrained(DIR))")
    hf = HFTokenizer.from_file(str(path))
    hf.no_padding()
    hf.no_truncation()
    pad = _token_id(config, "pad_token_id", None)
    if pad is not None and pad != _token_id(config, "eos_token_id", 50256):
        return hf, pad
    if hf.token_to_id(PAD_TOKEN) is not None:
        raise ValueError(f"the tokenizer already has a token {PAD_TOKEN!r} (id {hf.token_to_id(PAD_TOKEN)}) that "
                         "config.json does not name as pad_token_id; set pad_token_id to it in config.json")
    hf.add_special_tokens([PAD_TOKEN])
    return hf, hf.token_to_id(PAD_TOKEN)


def _add_pad_row(state: dict[str, Tensor], vocab: int) -> None:
    """One more row (zeros) for <pad> in the embedding (and an untied head), and the fixed output bias (a buffer,
    model.pad_logit) hiding it."""
    for name in ("embed.tokens.weight", "output_proj.weight"):
        if name in state:
            table = state[name]
            state[name] = torch.cat([table, table.new_zeros(1, table.size(1))])
    bias = torch.zeros(vocab + 1)
    bias[vocab] = PAD_LOGIT_BIAS
    state["output_proj.bias"] = bias


def load_gpt2_dir(hf_dir: Path, config: dict[str, Any]) -> tuple[DecoderOnly, Tokenizer, RunConfig]:
    """A GPT2LMHeadModel save_pretrained directory as our model (eval mode), Tokenizer and RunConfig (task lm).

    data.max_len is n_positions - 1 (a segment and its <|endoftext|> fill the position table); the data section
    is otherwise the default: set data.corpus=text and data.test_text=FILE (import-hf --set) to evaluate."""
    check_gpt2_config(config)
    hf, pad_id = _gpt2_tokenizer(hf_dir, config)
    vocab, tokens = config["vocab_size"], hf.get_vocab_size(with_added_tokens=True)
    if tokens > vocab + 1 or (tokens == vocab + 1 and pad_id != vocab):
        raise ValueError(f"tokenizer.json has {tokens} tokens but config.json vocab_size={vocab}: ids past "
                         f"{vocab - 1} have no embedding; is this the checkpoint's own tokenizer?")
    grow = pad_id == vocab  # <pad> needs a row of its own
    model_config = gpt2_model_config(config, vocab + grow, pad_id, PAD_LOGIT_BIAS if grow else None)
    state = state_from_gpt2(_read_weights(hf_dir), model_config.n_layers)
    if grow:
        _add_pad_row(state, vocab)
    model = build_model(model_config)
    apply_weights(model, state, strict=True)
    tokenizer = Tokenizer(hf, pad_id=pad_id, bos_id=model_config.bos_id, eos_id=model_config.eos_id)
    run = RunConfig(model=model_config, data=DataConfig(max_len=max(1, model_config.max_positions - 1)),
                    train=TrainConfig(max_epochs=1, label_smoothing=0.0), decode=DecodeConfig(beam=1), task="lm")
    return model.eval(), tokenizer, run


# ------------------------------------------------------------------------------------------------ export

# ModelConfig fields that do not change what a decoder-only model computes in eval mode, or that export_gpt2
# carries over itself; every other field must be what a GPT-2 config.json gives (gpt2_model_config).
_NOT_COMPARED = {"type", "src_vocab_size", "tgt_vocab_size", "n_encoder_layers", "n_decoder_layers",
                 "sinusoidal_interleaved", "share_embeddings", "dropout", "attention_dropout", "activation_dropout",
                 "pad_logit", "pad_id", "bos_id", "eos_id", "image_size", "patch_size", "channels", "image_mean",
                 "image_std", "image_resample", "n_classes", "labels", "type_vocab_size", "pooling",
                 "embed_pooling", "embed_normalize", "relative_buckets", "relative_max_distance"}


def _imported_pad_row(m: ModelConfig) -> bool:
    """Whether <pad> is a row load_gpt2_dir added: the last id, with a fixed logit (model.pad_logit)."""
    return m.pad_logit is not None and m.pad_id == m.tgt_vocab_size - 1


def gpt2_config_json(m: ModelConfig, vocab_size: int, pad_id: int | None) -> dict[str, Any]:
    """The config.json of a GPT2LMHeadModel with our model's hyperparameters."""
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab_size,
        "n_positions": m.max_positions, "n_embd": m.d_model, "n_layer": m.n_layers, "n_head": m.n_heads,
        "n_inner": m.d_ff, "activation_function": _EXPORT_ACTIVATIONS.get(m.activation, m.activation),
        "resid_pdrop": m.dropout, "embd_pdrop": m.dropout, "attn_pdrop": m.attention_dropout,
        "layer_norm_epsilon": m.layer_norm_eps, "initializer_range": 0.02, "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False, "add_cross_attention": False,
        "tie_word_embeddings": m.tie_output, "use_cache": True, "bos_token_id": m.bos_id, "eos_token_id": m.eos_id,
        "pad_token_id": pad_id, "dtype": "float32",
    }


def _check_exportable(m: ModelConfig, hf_config: dict[str, Any], drop_pad: bool) -> None:
    """ValueError naming every option of `m` that GPT2LMHeadModel cannot express."""
    reasons = [] if m.activation in _EXPORT_ACTIVATIONS else [
        f"activation={m.activation!r} (GPT-2: {sorted(_EXPORT_ACTIVATIONS)})"]
    if m.pad_logit is not None and not drop_pad:
        reasons.append(f"pad_logit={m.pad_logit} with pad_id={m.pad_id} not the last id (GPT-2 has no fixed logits)")
    if not reasons:
        expected = gpt2_model_config(hf_config, m.tgt_vocab_size, m.pad_id, m.pad_logit)
        reasons = [f"{name}={getattr(m, name)!r} (GPT-2: {getattr(expected, name)!r})"
                   for name in (f.name for f in dataclasses.fields(m)) if name not in _NOT_COMPARED
                   and getattr(m, name) != getattr(expected, name)]
    if m.activation_dropout:
        logger.warning("activation_dropout=%s is not exported: GPT-2 has no dropout inside the feed-forward "
                       "(this matters for fine-tuning only)", m.activation_dropout)
    if reasons:
        raise ValueError(f"this model cannot be written as GPT-2: {'; '.join(reasons)}. GPT-2 is pre-LN "
                         "(norm_first=true) with learned positions, unscaled embeddings, LayerNorm, biases")


def state_to_gpt2(model: DecoderOnly, n_layers: int, vocab_size: int, tied: bool) -> dict[str, Tensor]:
    """Our weights under GPT2LMHeadModel's names and Conv1D (in, out) layouts; rows past vocab_size dropped."""
    ours = {name: tensor.detach() for name, tensor in model.state_dict().items()}
    state = {"transformer.wte.weight": ours["embed.tokens.weight"][:vocab_size],
             "transformer.wpe.weight": ours["embed.positions.weight"],
             "transformer.ln_f.weight": ours["stack.final_norm.weight"],
             "transformer.ln_f.bias": ours["stack.final_norm.bias"]}
    for i in range(n_layers):
        prefix, theirs = f"stack.layers.{i}.", f"transformer.h.{i}."
        for kind in ("weight", "bias"):
            fused = torch.cat([ours[f"{prefix}self_attn.{proj}.{kind}"] for proj in _QKV])
            state[f"{theirs}attn.c_attn.{kind}"] = fused.t() if kind == "weight" else fused
            for hf_name, name in _CONV1D.items():
                value = ours[f"{prefix}{name}.{kind}"]
                state[f"{theirs}{hf_name}.{kind}"] = value.t() if kind == "weight" else value
            for hf_name, name in _NORMS.items():
                state[f"{theirs}{hf_name}.{kind}"] = ours[f"{prefix}{name}.{kind}"]
    if not tied:
        state["lm_head.weight"] = ours["output_proj.weight"][:vocab_size]
    return {name: tensor.float() for name, tensor in state.items()}


def _write_tokenizer(tokenizer: Tokenizer, out: Path, m: ModelConfig, drop_pad: bool) -> None:
    """tokenizer.json (without the <pad> import added, when dropped) and a tokenizer_config.json that
    AutoTokenizer reads as a PreTrainedTokenizerFast with the model's special tokens."""
    tree = json.loads(tokenizer.hf_tokenizer.to_str())
    if drop_pad:
        tree["added_tokens"] = [t for t in tree.get("added_tokens", []) if t["id"] != m.pad_id]
    (out / "tokenizer.json").write_text(json.dumps(tree, ensure_ascii=False), encoding="utf-8")
    token = tokenizer.hf_tokenizer.id_to_token
    settings = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": token(m.bos_id),
                "eos_token": token(m.eos_id), "pad_token": None if drop_pad else token(m.pad_id),
                "model_max_length": m.max_positions, "clean_up_tokenization_spaces": False}
    if tokenizer.unk_id is not None:
        settings["unk_token"] = token(tokenizer.unk_id)
    (out / "tokenizer_config.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")


def export_gpt2(model_dir: Path, out: Path) -> None:
    """Write our decoder-only model directory `model_dir` as a GPT2LMHeadModel save_pretrained directory `out`
    (config.json, generation_config.json, model.safetensors, tokenizer.json, tokenizer_config.json); reached
    through export_hf.export_hf (`transformer export-hf`), which gives it `out` empty and cleans up on a
    refusal. A model with options GPT-2 lacks (post-LN, sinusoidal positions, scaled embeddings, ...) is
    refused, naming them."""
    from transformer.inference import load_model_dir
    from transformer.interop.export_hf import write_json, write_safetensors

    model, tokenizer, run = load_model_dir(model_dir)
    m = run.model
    if m.type != "decoder_only":
        raise ValueError(f"{model_dir} holds a model.type={m.type!r} model; GPT-2 export needs a decoder_only one "
                         "(task lm)")
    drop_pad = _imported_pad_row(m)
    vocab = m.tgt_vocab_size - drop_pad
    hf_config = gpt2_config_json(m, vocab, None if drop_pad else m.pad_id)
    _check_exportable(m, hf_config, drop_pad)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / "model.safetensors", state_to_gpt2(model, m.n_layers, vocab, m.tie_output))
    write_json(out / "generation_config.json",
               {key: hf_config[key] for key in ("bos_token_id", "eos_token_id", "pad_token_id")})
    _write_tokenizer(tokenizer, out, m, drop_pad)
    write_json(out / "config.json", hf_config)
    logger.info("exported %s as GPT-2 into %s", model_dir, out)
