"""Training's own files: train_state.pt (optimizer, RNG states, progress and, with a model, its weights),
a weights_only torch file written atomically and recorded in the manifest (transformer/safe_files.py), so that
--resume continues exactly where training stopped.

The model directory's files (config, weights, tokenizer) are transformer/model_dir.py's.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from transformer.model_dir import apply_weights, inside, require_file, unwrap_model
from transformer.safe_files import atomic_path, remove_file, verify

logger = logging.getLogger(__name__)

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
    optimizer_state: dict | None = None,
) -> None:
    """Save optimizer, scheduler, step, epoch, RNG states and ``extra`` atomically.

    ``extra`` must hold only plain values (numbers, strings, lists, dicts, tensors). With ``model``
    the (unwrapped) model's current weights are stored too, so one file resumes training exactly.
    ``optimizer_state`` replaces ``optimizer.state_dict()`` (a sharded optimizer's gathered state).
    """
    _check_plain(extra, "extra")
    payload: dict[str, Any] = {
        "optimizer": optimizer.state_dict() if optimizer_state is None else optimizer_state,
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "step": int(step),
        "epoch": int(epoch),
        "rng": _rng_state(),
        "extra": dict(extra or {}),
    }
    if model is not None:
        payload["model"] = unwrap_model(model).state_dict()
    with atomic_path(path, record=True) as tmp:
        torch.save(payload, tmp)
    logger.info("saved training state (step %d) to %s", step, path)


def load_train_state(
    path: str | os.PathLike,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    model: nn.Module | None = None,
    load_optimizer: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """Restore what ``save_train_state`` wrote (RNG states included); return ``{step, epoch, extra}``.

    With ``model``, its weights are restored too (ValueError if the file holds none). ``load_optimizer``
    replaces ``optimizer.load_state_dict`` (a sharded optimizer's).
    """
    path = Path(path)
    require_file(path, "training state")
    verify(path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if model is not None:
        if "model" not in payload:
            raise ValueError(f"{path} holds no model weights; save it with save_train_state(..., model=model)")
        apply_weights(model, payload["model"])
    (load_optimizer or optimizer.load_state_dict)(payload["optimizer"])
    if scheduler is not None:
        if payload["scheduler"] is None:
            raise ValueError(f"{path} holds no scheduler state; pass scheduler=None or save one")
        scheduler.load_state_dict(payload["scheduler"])
    _set_rng_state(payload["rng"])
    return {"step": payload["step"], "epoch": payload["epoch"], "extra": payload["extra"]}


def load_train_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """The model weights a train_state.pt holds (on the CPU), alone."""
    path = Path(path)
    require_file(path, "training state")
    verify(path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if "model" not in payload:
        raise ValueError(f"{path} holds no model weights; save it with save_train_state(..., model=model)")
    return payload["model"]


def remove_unlisted_checkpoints(out_dir: str | os.PathLike, listed: list[str]) -> None:
    """Delete the checkpoints/step-*.safetensors of `out_dir` that `listed` (paths relative to it, as a saved
    state's progress holds them) no longer names. Call it only after that state is saved: a run killed before
    then resumes from a state that still lists them."""
    out_dir = Path(out_dir)
    kept = {inside(out_dir, name, "checkpoint") for name in listed}
    for path in (out_dir / "checkpoints").glob("step-*.safetensors"):
        if path.resolve() not in kept:
            remove_file(path)
