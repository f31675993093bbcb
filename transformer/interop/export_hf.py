"""`transformer export-hf`: one of our model directories written as a Hugging Face save_pretrained directory
(config.json, model.safetensors, and what the type adds: generation_config.json, tokenizer files,
preprocessor_config.json), which `transformers` loads with the same numbers.

    export_hf(model_dir, out)   the exporter EXPORTERS names for the model's model.type, into a new `out`

EXPORTERS maps our model.type to "module:function", imported when used; each function takes (model_dir: Path,
out: Path), writes `out` (which exists, empty) and returns None, refusing with a one-line ValueError a model
whose options the Hugging Face class cannot express, naming them. The helpers below (read a model directory,
write config.json and the weights) are for every exporter.

Nothing here imports `transformers`: the files are written as save_pretrained writes them.
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from transformer.config import ModelConfig, RunConfig

EXPORTERS: dict[str, str] = {
    "decoder_only": "transformer.interop.hf_gpt2:export_gpt2",
    "encoder_decoder": "transformer.interop.export_seq2seq:export_encoder_decoder",
    "encoder_only": "transformer.interop.hf_bert:export_bert",
    "vision": "transformer.interop.hf_vit:export_vit_dir",
}


def export_hf(model_dir: str | Path, out: str | Path) -> None:
    """Write our model directory `model_dir` as a Hugging Face directory `out` (which must not exist or be
    empty). On a refusal, `out` is left as it was."""
    model_dir, out = Path(model_dir), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not an empty directory; choose a new one or remove it first")
    from transformer.model_dir import read_config

    config = read_config(model_dir)
    target = EXPORTERS.get(config.model.type)
    if target is None:
        raise ValueError(f"model.type={config.model.type!r} has no Hugging Face exporter yet; export-hf writes "
                         f"{sorted(EXPORTERS)} (see transformer/interop/export_hf.py EXPORTERS)")
    module, function = target.split(":")
    existed = out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        getattr(importlib.import_module(module), function)(model_dir, out)
    except BaseException:
        if not existed:
            shutil.rmtree(out)
        else:  # it was empty: empty it again
            for path in out.iterdir():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        raise


# ------------------------------------------------------------------------------------ for every exporter


def load_for_export(model_dir: Path) -> tuple[nn.Module, RunConfig]:
    """The model (eval mode, unpacked weights) and config of one of our model directories (no tokenizer read)."""
    from transformer.model_dir import WEIGHTS_FILE, inside, load_weights, read_config
    from transformer.models import build_model

    config = read_config(model_dir)
    model = build_model(config.model)
    load_weights(model, inside(model_dir, WEIGHTS_FILE, "weights file"))
    return model.eval(), config


def refuse_options(model: ModelConfig, handled: set[str], target: str) -> list[str]:
    """'model.KEY=VALUE' for each option outside `handled` that differs from ModelConfig's default: options
    the exporter's `target` class has no counterpart for (the list of fields grows as our layers gain options)."""
    defaults = ModelConfig(type=model.type, n_layers=model.n_layers, image_size=model.image_size,
                           patch_size=model.patch_size, channels=model.channels, n_classes=model.n_classes)
    return [f"model.{name}={getattr(model, name)!r} ({target} has no such option; supported: "
            f"{getattr(defaults, name)!r})"
            for name in model.__dataclass_fields__ if name not in handled
            and getattr(model, name) != getattr(defaults, name)]


def write_json(path: Path, values: dict[str, Any]) -> None:
    path.write_text(json.dumps(values, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_safetensors(path: Path, state: dict[str, Tensor]) -> None:
    """`state` as save_pretrained writes it: contiguous float tensors, each its own storage, format pt."""
    import safetensors.torch

    tensors = {name: tensor.detach().contiguous().clone() for name, tensor in state.items()}
    safetensors.torch.save_file(tensors, str(path), metadata={"format": "pt"})
