"""Checkpoints: weights as safetensors, training state as a weights_only torch file, all written atomically.

A model directory holds ``model.safetensors`` (``save_weights``) and ``train_state.pt``
(``save_train_state``). Works with any ``nn.Module``; ``torch.compile`` and DDP wrappers are unwrapped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


# ----------------------------------------------------------------------------------------------- files


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed.

    Readers never see a half-written file, and a failure keeps the previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)  # mkstemp makes 0600
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (temporary file in the same directory, then ``os.replace``)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def _require_file(path: Path, what: str) -> None:
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
    """Save the model's weights to a safetensors file; tied weights are stored once."""
    module = unwrap_model(model)
    with atomic_path(path) as tmp:
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
        logger.warning("loading non-strictly: missing %s, unexpected %s", missing, unexpected)
    module.load_state_dict(full, strict=False)
    return missing, unexpected


def load_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> tuple[list[str], list[str]]:
    """Load a safetensors file written by ``save_weights`` into ``model`` (see ``apply_weights``)."""
    path = Path(path)
    _require_file(path, "weights file")
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
        _require_file(path, "weights file")
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


# ----------------------------------------------------------------------------------------- train state


def _rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU, CUDA), python ``random`` and numpy, as weights_only-loadable values."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": [str(kind), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(state["cuda"]):
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            logger.warning("CUDA RNG state of %d device(s) not restored on this machine", len(state["cuda"]))


def _check_plain(value: Any, where: str) -> None:
    """Raise unless ``value`` is made of types ``torch.load(weights_only=True)`` accepts."""
    if value is None or isinstance(value, (bool, int, float, str, Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, f"{where} key {key!r}")
            _check_plain(item, f"{where}[{key!r}]")
    else:
        raise ValueError(
            f"{where} is a {type(value).__name__}, which weights_only loading rejects; "
            "convert it to plain numbers, strings, lists, dicts or tensors (e.g. dataclasses.asdict)"
        )


def save_train_state(
    path: str | os.PathLike,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    step: int,
    epoch: int,
    extra: dict | None = None,
    model: nn.Module | None = None,
) -> None:
    """Save optimizer, scheduler, step, epoch, RNG states and ``extra`` atomically.

    ``extra`` must hold only plain values (numbers, strings, lists, dicts, tensors). With ``model``
    the (unwrapped) model's current weights are stored too, so one file resumes training exactly.
    """
    _check_plain(extra, "extra")
    payload: dict[str, Any] = {
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "step": int(step),
        "epoch": int(epoch),
        "rng": _rng_state(),
        "extra": dict(extra or {}),
    }
    if model is not None:
        payload["model"] = unwrap_model(model).state_dict()
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    logger.info("saved training state (step %d) to %s", step, path)


def load_train_state(
    path: str | os.PathLike,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    model: nn.Module | None = None,
) -> dict[str, Any]:
    """Restore what ``save_train_state`` wrote (RNG states included); return ``{step, epoch, extra}``.

    With ``model``, its weights are restored too (ValueError if the file holds none).
    """
    path = Path(path)
    _require_file(path, "training state")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if model is not None:
        if "model" not in payload:
            raise ValueError(f"{path} holds no model weights; save it with save_train_state(..., model=model)")
        apply_weights(model, payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    if scheduler is not None:
        if payload["scheduler"] is None:
            raise ValueError(f"{path} holds no scheduler state; pass scheduler=None or save one")
        scheduler.load_state_dict(payload["scheduler"])
    _set_rng_state(payload["rng"])
    return {"step": payload["step"], "epoch": payload["epoch"], "extra": payload["extra"]}
