"""The model directory: what `train` and `import-hf` write and every other command reads.

    config.yaml         the resolved RunConfig (`read_config`, `write_config`)
    tokenizer.json      the tokenizer (data/tokenizer.py reads and writes it)
    model.safetensors   the weights (`save_weights`, `load_weights`); tied weights stored once

Every file is written atomically (transformer/safe_files.py): a reader never sees half a file, and a crash keeps
the previous one. Weights files are also recorded in their directory's manifest.json and verified when read.
Training's own files (train_state.pt, checkpoints/) are training/checkpoint.py's.
Works with any ``nn.Module``; ``torch.compile`` and DDP wrappers are unwrapped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import safetensors.torch
import yaml
from torch import Tensor, nn

from transformer.config import RunConfig
from transformer.safe_files import atomic_path, atomic_write_text, verify

logger = logging.getLogger(__name__)

CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE = "config.yaml", "tokenizer.json", "model.safetensors"
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


# ----------------------------------------------------------------------------------------------- files


def inside(model_dir: str | os.PathLike, relative: str | os.PathLike, what: str = "file") -> Path:
    """`model_dir / relative`, refused (ValueError) when it would lead outside `model_dir`: an absolute path,
    `..`, or a symbolic link out of it. Names read from a directory's own files go through here."""
    root = Path(model_dir).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"the {what} {str(relative)!r} leads outside the model directory {model_dir}; name a file "
                         "inside it")
    return path


def require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path} (check the path, or train a model first)")


# --------------------------------------------------------------------------------------------- weights


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside ``torch.compile`` (``_orig_mod``) and DataParallel/DDP (``module``) wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _strip_prefixes(state: dict[str, Tensor], own_keys: set[str]) -> dict[str, Tensor]:
    """Remove wrapper prefixes shared by every key (checkpoints written by other tools)."""
    changed = True
    while changed and state:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            theirs = all(key.startswith(prefix) for key in state)
            if theirs and not any(key.startswith(prefix) for key in own_keys):
                state = {key[len(prefix):]: value for key, value in state.items()}
                changed = True
    return state


def _alias_groups(state: Mapping[str, Tensor]) -> list[list[str]]:
    """Names in a state dict grouped by the tensor they alias (tied weights share one group)."""
    groups: dict[tuple, list[str]] = {}
    for name, tensor in state.items():
        ptr = tensor.untyped_storage().data_ptr() if tensor.numel() else 0
        key: tuple = (name,) if ptr == 0 else (
            tensor.device, ptr, tensor.storage_offset(), tuple(tensor.shape), tensor.stride())
        groups.setdefault(key, []).append(name)
    return list(groups.values())


def save_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Save the model's weights to a safetensors file, recorded in its directory's manifest; tied weights are
    stored once."""
    module = unwrap_model(model)
    with atomic_path(path, record=True) as tmp:
        safetensors.torch.save_model(module, str(tmp), metadata={"format": "pt"})
    logger.info("saved weights to %s", path)


def apply_weights(
    model: nn.Module, state: Mapping[str, Tensor], strict: bool = True
) -> tuple[list[str], list[str]]:
    """Copy ``state`` into ``model``, accepting one name per group of tied weights.

    Returns ``(missing, unexpected)`` key lists. Raises ValueError naming every missing and unexpected key
    (when ``strict``) and every shape mismatch (always), instead of torch's wall of text.
    """
    module = unwrap_model(model)
    own = module.state_dict()
    state = _strip_prefixes(dict(state), set(own))
    full: dict[str, Tensor] = {}
    missing: list[str] = []
    for group in _alias_groups(own):
        present = [name for name in group if name in state]
        if present:
            for name in group:
                full[name] = state[name] if name in state else state[present[0]]
        else:
            missing.extend(group)
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        (name, tuple(value.shape), tuple(own[name].shape))
        for name, value in full.items() if value.shape != own[name].shape
    ]
    if mismatched or (strict and (missing or unexpected)):
        lines = ["checkpoint does not match the model:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        for name, ckpt_shape, model_shape in mismatched:
            lines.append(f"  shape mismatch {name}: checkpoint {ckpt_shape}, model {model_shape}")
        lines.append("  (was the checkpoint written with a different config or vocabulary?)")
        raise ValueError("\n".join(lines))
    if missing or unexpected:
        logger.info("loading non-strictly: missing %s, unexpected %s", missing, unexpected)  # the caller reports them
    module.load_state_dict(full, strict=False)
    return missing, unexpected


def load_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> tuple[list[str], list[str]]:
    """Load a safetensors file written by ``save_weights`` into ``model`` (see ``apply_weights``)."""
    path = Path(path)
    require_file(path, "weights file")
    verify(path)
    return apply_weights(model, safetensors.torch.load_file(str(path), device="cpu"), strict=strict)


def average_weights(paths: Sequence[str | os.PathLike]) -> dict[str, Tensor]:
    """Element-wise mean of several weight files (section 6.1 checkpoint averaging).

    Floating tensors are averaged in fp32 and cast back; integer tensors are taken from the last file.
    Load the result with ``apply_weights``.
    """
    if not paths:
        raise ValueError("average_weights needs at least one checkpoint path, got none")
    paths = [Path(p) for p in paths]
    for path in paths:
        require_file(path, "weights file")
        verify(path)
    first = safetensors.torch.load_file(str(paths[0]))
    sums = {name: t.float() if t.is_floating_point() else t.clone() for name, t in first.items()}
    for path in paths[1:]:
        state = safetensors.torch.load_file(str(path))
        if set(state) != set(first):
            raise ValueError(
                f"{path} has different keys from {paths[0]}: only in {path.name}: "
                f"{sorted(set(state) - set(first))}, only in {paths[0].name}: {sorted(set(first) - set(state))}"
            )
        for name, tensor in state.items():
            if tensor.shape != first[name].shape:
                raise ValueError(
                    f"{name} has shape {tuple(tensor.shape)} in {path} but {tuple(first[name].shape)} in {paths[0]}"
                )
            if tensor.is_floating_point():
                sums[name] += tensor.float()
            else:
                sums[name] = tensor.clone()
    return {
        name: (total / len(paths)).to(first[name].dtype) if first[name].is_floating_point() else total
        for name, total in sums.items()
    }


# ---------------------------------------------------------------------------------------------- config


def read_config(model_dir: str | os.PathLike) -> RunConfig:
    """The RunConfig a model directory was written with (config.yaml)."""
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {model_dir} is not a model directory (train one with `transformer train`, "
            "or import one with `transformer import-hf`)"
        )
    return RunConfig.from_dict(yaml.safe_load(path.read_text(encoding="utf-8")))


def write_config(model_dir: str | os.PathLike, config: RunConfig) -> None:
    atomic_write_text(Path(model_dir) / CONFIG_FILE, config.to_yaml())
