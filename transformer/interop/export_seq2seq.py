"""Our encoder-decoder written as a Hugging Face MarianMTModel or BartForConditionalGeneration directory
(`transformer export-hf`; export_hf.py EXPORTERS["encoder_decoder"]). The inverse of huggingface.py's import.

Which class: the one whose fixed layout our options describe (huggingface.py's module docstring):
    Marian: sinusoidal positions, no LayerNorm on the embeddings; shared or separate vocabularies.
    BART:   learned positions (written from row 2, as BART reads them) and a LayerNorm on the embeddings
            (layernorm_embedding); one shared vocabulary.
    Both:   post-LN layers with LayerNorm eps 1e-5, relu / gelu / swish / gelu_new, embeddings scaled by
            sqrt(d_model) or not, tied or untied output projection, with or without an output bias
            (final_logits_bias; zeros when we have none), decoding starting with model.bos_id.
The paper's interleaved sinusoids (sin on even, cos on odd dimensions) are Marian's table (sines, then
cosines) with the d_model dimensions reordered: the residual stream of a Transformer can be permuted
consistently (embedding columns, every layer's input columns and output rows, LayerNorm parameters), which
changes no output; our paper model is written that way as a Marian model with the same logits.

Refused, naming the options: pre-LN layers (norm_first), another LayerNorm eps, learned positions without an
embedding LayerNorm or sinusoids with one, BART with separate vocabularies, and every option of ours neither
class has (RMSNorm, gated feed-forward, relative positions, ...: any non-default ModelConfig field not listed).

Decoding settings go to generation_config.json: num_beams = decode.beam, length_penalty = decode.alpha (the
nearest analogue: HF divides by n ** length_penalty, we by ((5 + n) / 6) ** alpha), <pad> banned. The tokenizer
is copied as tokenizer.json with a tokenizer_config.json for PreTrainedTokenizerFast (shared vocabulary only;
Marian's SentencePiece files are not rebuilt).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from transformer.config import ModelConfig, RunConfig
from transformer.interop.export_hf import load_for_export, refuse_options, write_json, write_safetensors
from transformer.interop.huggingface import _LAYER_PARTS
from transformer.model_dir import TOKENIZER_FILE

HF_LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which Marian and BART use
OUR_TO_HF_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "swish": "swish", "gelu_new": "gelu_new"}
HANDLED = {"type", "src_vocab_size", "tgt_vocab_size", "d_model", "n_heads", "d_ff", "n_encoder_layers",
           "n_decoder_layers", "n_layers", "dropout", "attention_dropout", "activation_dropout", "activation",
           "norm_first", "positional", "sinusoidal_interleaved", "max_positions", "position_offset",
           "layernorm_embedding", "share_embeddings", "tie_output", "output_bias", "scale_embedding",
           "layer_norm_eps", "pad_id", "bos_id", "eos_id"}


def hf_family(m: ModelConfig) -> str:
    """"marian" or "bart" for our encoder-decoder config, or a ValueError naming every option neither has."""
    problems = refuse_options(m, HANDLED, "Marian or BART")
    if m.norm_first:
        problems.append("model.norm_first=True (pre-LN; Marian and BART are post-LN: norm_first=false)")
    if not math.isclose(m.layer_norm_eps, HF_LAYER_NORM_EPS):
        problems.append(f"model.layer_norm_eps={m.layer_norm_eps} (Marian and BART use {HF_LAYER_NORM_EPS})")
    if m.activation not in OUR_TO_HF_ACTIVATIONS:
        problems.append(f"model.activation={m.activation!r} (supported: {sorted(OUR_TO_HF_ACTIVATIONS)})")
    family = None
    if m.positional == "sinusoidal" and not m.layernorm_embedding:
        family = "marian"
    elif m.positional == "learned" and m.layernorm_embedding and m.share_embeddings:
        family = "bart"
    else:
        problems.append(f"model.positional={m.positional!r} with layernorm_embedding={m.layernorm_embedding} and "
                        f"share_embeddings={m.share_embeddings} (Marian: sinusoidal without layernorm_embedding; "
                        "BART: learned with layernorm_embedding and share_embeddings)")
    if problems:
        raise ValueError(f"this encoder-decoder cannot be written as Marian or BART: {'; '.join(problems)}")
    return family


def hf_config(m: ModelConfig, family: str) -> dict[str, Any]:
    """config.json of the Marian or BART model with our options."""
    config = dict(
        architectures=["MarianMTModel" if family == "marian" else "BartForConditionalGeneration"],
        model_type=family, is_encoder_decoder=True, vocab_size=m.src_vocab_size, d_model=m.d_model,
        encoder_layers=m.n_encoder_layers, decoder_layers=m.n_decoder_layers, encoder_attention_heads=m.n_heads,
        decoder_attention_heads=m.n_heads, encoder_ffn_dim=m.d_ff, decoder_ffn_dim=m.d_ff,
        activation_function=OUR_TO_HF_ACTIVATIONS[m.activation], dropout=m.dropout,
        attention_dropout=m.attention_dropout, activation_dropout=m.activation_dropout,
        max_position_embeddings=m.max_positions, scale_embedding=m.scale_embedding, tie_word_embeddings=m.tie_output,
        pad_token_id=m.pad_id, eos_token_id=m.eos_id, decoder_start_token_id=m.bos_id, forced_eos_token_id=None,
        dtype="float32",
    )
    if family == "marian":
        return {**config, "share_encoder_decoder_embeddings": m.share_embeddings,
                "decoder_vocab_size": m.tgt_vocab_size, "bos_token_id": None}
    return {**config, "bos_token_id": m.bos_id}


# ----------------------------------------------------------------------------------------------- weights

_PARTS_BACK = {ours: theirs for theirs, ours in _LAYER_PARTS.items()}
_INPUT_COLUMNS = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "fc1.weight", "tokens.weight",
                  "output_proj.weight")  # (out, d_model): the residual stream is their input
_OUTPUT_ROWS = ("out_proj.weight", "out_proj.bias", "fc2.weight", "fc2.bias", "norm.weight", "norm.bias")
_UNTOUCHED = ("q_proj.bias", "k_proj.bias", "v_proj.bias", "fc1.bias", "output_proj.bias")


def permute_residual(state: dict[str, Tensor], order: Tensor) -> dict[str, Tensor]:
    """The same model with its d_model dimensions reordered: new dimension k is old dimension order[k]."""
    out = {}
    for name, tensor in state.items():
        if name.endswith(_INPUT_COLUMNS):
            out[name] = tensor[:, order]
        elif name.endswith(_OUTPUT_ROWS):
            out[name] = tensor[order]
        elif name.endswith(_UNTOUCHED):
            out[name] = tensor
        else:
            raise ValueError(f"{name}: no rule to reorder its d_model dimensions; export this model unpermuted")
    return out


def interleaved_to_halves(d_model: int) -> Tensor:
    """The order that turns the paper's sinusoids (sin 0, cos 0, sin 1, ...) into Marian's (sines, cosines)."""
    return torch.cat([torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)])


def state_to_hf(state: dict[str, Tensor], m: ModelConfig, family: str) -> dict[str, Tensor]:
    """Our parameter names -> the names save_pretrained writes for Marian or BART (tied tensors once)."""
    hf: dict[str, Tensor] = {}
    for name, tensor in state.items():
        stack, _, rest = name.partition(".layers.")
        if stack in ("encoder", "decoder") and rest:
            index, _, part = rest.partition(".")
            ours = next(p for p in _PARTS_BACK if part.startswith(p))
            hf[f"model.{stack}.layers.{index}.{_PARTS_BACK[ours]}{part[len(ours):]}"] = tensor
    for side, stack in (("src_embed", "encoder"), ("tgt_embed", "decoder")):
        if f"{side}.norm.weight" in state:
            hf[f"model.{stack}.layernorm_embedding.weight"] = state[f"{side}.norm.weight"]
            hf[f"model.{stack}.layernorm_embedding.bias"] = state[f"{side}.norm.bias"]
        if f"{side}.positions.weight" in state:  # BART reads position p from row p + 2
            table = state[f"{side}.positions.weight"][m.position_offset:]
            hf[f"model.{stack}.embed_positions.weight"] = torch.cat([table.new_zeros(2, m.d_model), table])
    if m.share_embeddings:
        hf["model.shared.weight"] = state["tgt_embed.tokens.weight"]
    # transformers 5 ties the stacks' embeddings to model.shared only with tie_word_embeddings; untied (or with
    # separate vocabularies), it reads each from its own name
    if not m.share_embeddings or not m.tie_output:
        hf["model.encoder.embed_tokens.weight"] = state["src_embed.tokens.weight"]
        hf["model.decoder.embed_tokens.weight"] = state["tgt_embed.tokens.weight"]
    if not m.tie_output:
        hf["lm_head.weight"] = state["output_proj.weight"]
    bias = state.get("output_proj.bias", torch.zeros(m.tgt_vocab_size))
    hf["final_logits_bias"] = bias.reshape(1, -1)
    return hf


# ----------------------------------------------------------------------------------------------- files


def _generation_config(run: RunConfig) -> dict[str, Any]:
    m = run.model
    return dict(decoder_start_token_id=m.bos_id, eos_token_id=m.eos_id, pad_token_id=m.pad_id,
                bos_token_id=m.bos_id, forced_eos_token_id=None, num_beams=run.decode.beam,
                length_penalty=run.decode.alpha, bad_words_ids=[[m.pad_id]], max_length=m.max_positions)


def _copy_tokenizer(model_dir: Path, out: Path, m: ModelConfig) -> None:
    """tokenizer.json and a tokenizer_config.json naming its special tokens, for PreTrainedTokenizerFast."""
    source = model_dir / TOKENIZER_FILE
    if not source.is_file() or not m.share_embeddings:
        return  # separate vocabularies: our two tokenizer files have no Hugging Face counterpart
    from tokenizers import Tokenizer as HFTokenizer

    shutil.copyfile(source, out / "tokenizer.json")
    vocab = HFTokenizer.from_file(str(source))
    specials = {key: vocab.id_to_token(i) for key, i in (("pad_token", m.pad_id), ("eos_token", m.eos_id),
                                                            ("bos_token", m.bos_id))}
    write_json(out / "tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast",
                                               **{k: v for k, v in specials.items() if v is not None}})


def export_encoder_decoder(model_dir: Path, out: Path) -> None:
    """Write our encoder-decoder model directory as a Marian or BART directory `out` (see the module docstring)."""
    model, run = load_for_export(model_dir)
    m = run.model
    family = hf_family(m)
    state = {name: tensor for name, tensor in model.state_dict().items()}
    if family == "marian" and m.sinusoidal_interleaved:
        state = permute_residual(state, interleaved_to_halves(m.d_model))
    write_json(out / "config.json", hf_config(m, family))
    write_json(out / "generation_config.json", _generation_config(run))
    write_safetensors(out / "model.safetensors", state_to_hf(state, m, family))
    _copy_tokenizer(model_dir, out, m)
