"""Hugging Face ViTForImageClassification checkpoints in our VisionTransformer (model.type `vision`), and back.

    load_vit_dir(hf_dir, config)    a save_pretrained directory -> (VisionTransformer, None, RunConfig task image)
                                    (huggingface.py's FAMILY_CONVERTERS calls it for model_type "vit")
    export_vit_dir(model_dir, out)  one of our vision model directories -> a ViTForImageClassification directory
                                    (export_hf.py's EXPORTERS calls it for model.type "vision")

What ViT needs is an option of our layers: the patch embedding is our linear map over flattened patches (HF's
Conv2d with kernel = stride = patch, its (D, C, P, P) weight flattened channel by channel, as `patchify`
flattens); a [CLS] vector first; learned positions with a row for [CLS]; pre-LN layers (norm_first) whose stack
ends with a LayerNorm (HF's vit.layernorm); layer_norm_eps; the activation; the classifier on [CLS]'s state.
qkv_bias=false is our attention with zero query, key and value biases (the same numbers; exported back as
qkv_bias=true). id2label becomes model.labels, printed by `transformer predict`.

preprocessor_config.json (ViTImageProcessor) becomes model.image_mean, image_std and image_resample: `predict`
then reads a file as the processor's PIL backend does (RGB, resize to image_size, rescale, normalize; see
data/images.py read_image_normalized). The rescale factor is folded into mean and std:
(x * f - m) / s = (x / 255 - m / (255 f)) / (s / (255 f)).

Refused, with what is supported: architectures other than ViTForImageClassification (ViTModel's pooler,
ViTForMaskedImageModeling's decoder), non-square images or patches, activations we lack, multi-label or
regression heads (predict's softmax would be wrong), processors that crop, pad or resize by shortest edge.
encoder_stride (masked image modelling only) and pooler_* (ViTModel's pooler only) are ignored: the classifier
uses neither. Images of another size than image_size (interpolate_pos_encoding) are not reproduced: predict
resizes every file to image_size.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from transformer.config import ACTIVATION_NAMES, DataConfig, DecodeConfig, ModelConfig, RunConfig, TrainConfig

logger = logging.getLogger(__name__)

ARCHITECTURE = "ViTForImageClassification"
# HF hidden_act -> ours, for the activations we implement (config.ACTIVATION_NAMES).
VIT_ACTIVATIONS = {name: ours for name, ours in {
    "gelu": "gelu", "relu": "relu", "silu": "swish", "swish": "swish", "gelu_new": "gelu_new",
    "gelu_pytorch_tanh": "gelu_new"}.items() if ours in ACTIVATION_NAMES}
# PIL's filter numbers (HF's PILImageResampling) -> model.image_resample
RESAMPLES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
VIT_PROCESSOR_DEFAULTS = {"do_resize": True, "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255,
                          "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}

# ------------------------------------------------------------------------------------------------ config


def _square(config: dict[str, Any], key: str) -> int:
    value = config.get(key)
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        value = value[0]
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"config.json {key}={value!r}: only square sizes (one positive integer) are supported")
    return value


def check_vit_config(config: dict[str, Any]) -> None:
    """Refuse a ViT config we cannot run the same, naming each value and what is supported."""
    unsupported = []
    architectures = config.get("architectures") or [ARCHITECTURE]
    if architectures != [ARCHITECTURE]:
        unsupported.append(f"architectures={architectures!r} (supported: [{ARCHITECTURE!r}], a classifier on [CLS])")
    if config.get("hidden_act", "gelu") not in VIT_ACTIVATIONS:
        unsupported.append(f"hidden_act={config['hidden_act']!r} (supported: {sorted(VIT_ACTIVATIONS)})")
    if config.get("problem_type") not in (None, "single_label_classification"):
        unsupported.append(f"problem_type={config['problem_type']!r} (supported: single_label_classification)")
    if not isinstance(config.get("qkv_bias", True), bool):
        unsupported.append(f"qkv_bias={config['qkv_bias']!r} (supported: true or false)")
    if unsupported:
        raise ValueError(f"this vit checkpoint uses options we do not support: {'; '.join(unsupported)}")


def _labels(config: dict[str, Any]) -> tuple[str, ...]:
    id2label = config.get("id2label") or {}
    if sorted(int(i) for i in id2label) != list(range(len(id2label))) or len(id2label) < 2:
        raise ValueError(f"config.json id2label={id2label!r}: a classifier of at least 2 classes numbered "
                         "0..K-1 is needed (num_labels >= 2)")
    return tuple(str(id2label[i]) for i in sorted(id2label, key=int))


def vit_model_config(config: dict[str, Any], preprocessor: dict[str, Any] | None = None) -> ModelConfig:
    """Our ModelConfig for an HF ViT config dict (and its preprocessor_config.json, defaults when None)."""
    check_vit_config(config)
    image_size, channels = _square(config, "image_size"), config.get("num_channels", 3)
    labels = _labels(config)
    return ModelConfig(
        type="vision", d_model=config["hidden_size"], n_heads=config["num_attention_heads"],
        d_ff=config["intermediate_size"], n_layers=config["num_hidden_layers"],
        dropout=float(config.get("hidden_dropout_prob", 0.0)),
        attention_dropout=float(config.get("attention_probs_dropout_prob", 0.0)),
        activation=VIT_ACTIVATIONS[config.get("hidden_act", "gelu")], norm_first=True, positional="learned",
        layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)), image_size=image_size,
        patch_size=_square(config, "patch_size"), channels=channels, n_classes=len(labels), labels=labels,
        **preprocessing(preprocessor or VIT_PROCESSOR_DEFAULTS, image_size, channels),
    )


def preprocessing(processor: dict[str, Any], image_size: int, channels: int) -> dict[str, Any]:
    """image_mean, image_std and image_resample of our config for a ViTImageProcessor's settings."""
    for key, refused in (("do_center_crop", True), ("do_pad", True)):
        if processor.get(key) == refused:
            raise ValueError(f"preprocessor_config.json {key}={refused}: not supported (ViTImageProcessor resizes, "
                             "rescales and normalizes only); set it to false")
    settings = {**VIT_PROCESSOR_DEFAULTS, **processor}
    size = settings.get("size") or {"height": image_size, "width": image_size}
    if isinstance(size, int):  # older feature-extractor configs: one side
        size = {"height": size, "width": size}
    if settings["do_resize"] and size != {"height": image_size, "width": image_size}:
        raise ValueError(f"preprocessor_config.json size={size!r}: only {{'height': {image_size}, 'width': "
                         f"{image_size}}} (the model's image_size) is supported")
    if settings["resample"] not in RESAMPLES:
        raise ValueError(f"preprocessor_config.json resample={settings['resample']!r}: use one of {RESAMPLES}")
    factor = 255 * float(settings["rescale_factor"]) if settings["do_rescale"] else 255.0
    mean, std = (settings["image_mean"], settings["image_std"]) if settings["do_normalize"] else (0.0, 1.0)
    mean, std = ([float(v)] * channels if isinstance(v, (int, float)) else [float(x) for x in v] for v in (mean, std))
    if channels not in (1, 3) or len(mean) != channels or len(std) != channels:
        raise ValueError(f"num_channels={channels} with image_mean={mean}, image_std={std}: supported are RGB (3) "
                         "or grey (1) images with one mean and std per channel")
    return dict(image_mean=tuple(m / factor for m in mean), image_std=tuple(s / factor for s in std),
                image_resample=RESAMPLES[settings["resample"]] if settings["do_resize"] else "none")


# ----------------------------------------------------------------------------------------------- weights

_LAYER_KEY = re.compile(r"vit\.(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)")
_LAYER_PARTS = {  # legacy names (save_pretrained, the Hub) and transformers 5's module names -> ours
    "attention.attention.query": "self_attn.q_proj", "attention.q_proj": "self_attn.q_proj",
    "attention.attention.key": "self_attn.k_proj", "attention.k_proj": "self_attn.k_proj",
    "attention.attention.value": "self_attn.v_proj", "attention.v_proj": "self_attn.v_proj",
    "attention.output.dense": "self_attn.out_proj", "attention.o_proj": "self_attn.out_proj",
    "intermediate.dense": "ff.fc1", "mlp.fc1": "ff.fc1", "output.dense": "ff.fc2", "mlp.fc2": "ff.fc2",
    "layernorm_before": "self_attn_block.norm", "layernorm_after": "ff_block.norm",
}
_OTHER = {"vit.embeddings.cls_token": "cls", "vit.embeddings.position_embeddings": "positions.weight",
          "vit.embeddings.patch_embeddings.projection.weight": "patch_embed.weight",
          "vit.embeddings.patch_embeddings.projection.bias": "patch_embed.bias",
          "vit.layernorm.weight": "stack.final_norm.weight", "vit.layernorm.bias": "stack.final_norm.bias",
          "classifier.weight": "head.weight", "classifier.bias": "head.bias"}


def state_from_vit(state: dict[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """HF ViT parameter names and shapes -> ours; absent q/k/v biases (qkv_bias=false) become zeros. An unknown
    name is a ValueError listing them all."""
    ours: dict[str, Tensor] = {}
    unknown = []
    for name, tensor in state.items():
        layer = _LAYER_KEY.fullmatch(name)
        if layer and layer.group(2) in _LAYER_PARTS:
            ours[f"stack.layers.{layer.group(1)}.{_LAYER_PARTS[layer.group(2)]}.{layer.group(3)}"] = tensor
        elif name in _OTHER:
            ours[_OTHER[name]] = tensor
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"the checkpoint has weights a {ARCHITECTURE} has no place for: {', '.join(sorted(unknown))}")
    if "patch_embed.weight" in ours:  # (D, C, P, P) conv kernel -> (D, C * P * P), patchify's order
        ours["patch_embed.weight"] = ours["patch_embed.weight"].reshape(config.d_model, -1)
    if "positions.weight" in ours:
        ours["positions.weight"] = ours["positions.weight"].reshape(-1, config.d_model)  # (1, 1 + N, D) -> (1 + N, D)
    for i in range(config.n_layers or 0):
        for part in ("q_proj", "k_proj", "v_proj"):
            ours.setdefault(f"stack.layers.{i}.self_attn.{part}.bias", torch.zeros(config.d_model))
    return ours


def state_to_vit(state: dict[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """Ours -> HF ViTForImageClassification's saved names (the legacy ones save_pretrained writes) and shapes."""
    back = {ours: name for name, ours in _OTHER.items()}
    parts = {ours: name for name, ours in _LAYER_PARTS.items() if "_proj" not in name and "mlp" not in name}
    layer_key = re.compile(r"stack\.layers\.(\d+)\.(.+)\.(weight|bias)")
    hf: dict[str, Tensor] = {}
    for name, tensor in state.items():
        layer = layer_key.fullmatch(name)
        if layer:
            hf[f"vit.encoder.layer.{layer.group(1)}.{parts[layer.group(2)]}.{layer.group(3)}"] = tensor
        else:
            hf[back[name]] = tensor
    p, c = config.patch_size, config.channels
    key = "vit.embeddings.patch_embeddings.projection.weight"
    hf[key] = hf[key].reshape(config.d_model, c, p, p)
    hf["vit.embeddings.position_embeddings"] = hf["vit.embeddings.position_embeddings"].unsqueeze(0)
    return {name: tensor.detach().contiguous().clone() for name, tensor in hf.items()}


# ----------------------------------------------------------------------------------------------- files


def load_vit_dir(hf_dir: Path, config: dict[str, Any]) -> tuple[Any, None, RunConfig]:
    """(VisionTransformer in eval mode, None: no tokenizer, RunConfig with task image) of a save_pretrained
    directory of a ViTForImageClassification and, when there, its preprocessor_config.json."""
    from transformer.interop.huggingface import _read_weights
    from transformer.model_dir import apply_weights
    from transformer.models import build_model

    processor_file = Path(hf_dir) / "preprocessor_config.json"
    processor = json.loads(processor_file.read_text(encoding="utf-8")) if processor_file.is_file() else None
    if processor is None:
        logger.warning("%s has no preprocessor_config.json: predict will use ViTImageProcessor's defaults "
                       "(bilinear resize, mean 0.5, std 0.5)", hf_dir)
    model_config = vit_model_config(config, processor)
    model = build_model(model_config)
    apply_weights(model, state_from_vit(_read_weights(Path(hf_dir)), model_config), strict=True)
    run = RunConfig(model=model_config, data=DataConfig(corpus="digits"), train=TrainConfig(max_epochs=1),
                    decode=DecodeConfig(), task="image")
    return model.eval(), None, run


def export_vit_dir(model_dir: Path, out: Path) -> None:
    """Write our vision model directory as a ViTForImageClassification directory `out`: config.json,
    model.safetensors, preprocessor_config.json. Refused (ValueError naming the options): post-LN layers,
    options ViT has no counterpart for. A model of ours that reads files its own way (grey, inverted: no
    image_mean) gets a processor that only resizes and rescales: the inversion is not ViTImageProcessor's."""
    from transformer.interop.export_hf import load_for_export, refuse_options, write_json, write_safetensors

    model, run = load_for_export(model_dir)
    m = run.model
    handled = {"type", "d_model", "n_heads", "d_ff", "n_layers", "dropout", "attention_dropout", "activation",
               "norm_first", "layer_norm_eps", "image_size", "patch_size", "channels", "n_classes", "labels",
               "image_mean", "image_std", "image_resample", "positional", "max_positions"}
    problems = refuse_options(m, handled, ARCHITECTURE)
    if not m.norm_first:
        problems.append(f"model.norm_first=False (post-LN; {ARCHITECTURE} is pre-LN: norm_first=true)")
    activation = {ours: name for name, ours in VIT_ACTIVATIONS.items() if name != "gelu_pytorch_tanh"}
    if m.activation not in activation or m.activation_dropout:
        problems.append(f"model.activation={m.activation!r}, activation_dropout={m.activation_dropout} "
                        f"(supported: {sorted(activation)}, 0)")
    if problems:
        raise ValueError(f"this vision model cannot be written as a {ARCHITECTURE}: {'; '.join(problems)}")
    labels = m.labels or tuple(f"LABEL_{i}" for i in range(m.n_classes))
    write_json(out / "config.json", dict(
        architectures=[ARCHITECTURE], model_type="vit", hidden_size=m.d_model, num_hidden_layers=m.n_layers,
        num_attention_heads=m.n_heads, intermediate_size=m.d_ff, hidden_act=activation[m.activation],
        hidden_dropout_prob=m.dropout, attention_probs_dropout_prob=m.attention_dropout,
        layer_norm_eps=m.layer_norm_eps, image_size=m.image_size, patch_size=m.patch_size,
        num_channels=m.channels, qkv_bias=True, id2label={str(i): name for i, name in enumerate(labels)},
        label2id={name: i for i, name in enumerate(labels)}, dtype="float32"))
    write_json(out / "preprocessor_config.json", _processor(m))
    write_safetensors(out / "model.safetensors", state_to_vit(model.state_dict(), m))


def _processor(m: ModelConfig) -> dict[str, Any]:
    """preprocessor_config.json of a ViTImageProcessor that reads files as `predict` does (but for our own
    models' grey conversion and inversion)."""
    resample = {name: number for number, name in RESAMPLES.items()}
    mean, std = (m.image_mean, m.image_std) if m.image_mean else ((0.0,) * m.channels, (1.0,) * m.channels)
    return dict(image_processor_type="ViTImageProcessor", do_resize=m.image_resample != "none",
                size={"height": m.image_size, "width": m.image_size},
                resample=resample.get(m.image_resample, 2), do_rescale=True, rescale_factor=1 / 255,
                do_normalize=bool(m.image_mean), image_mean=list(mean), image_std=list(std))
