"""Adam and the learning rate of section 5.3: warmup, then inverse square root, then an optional cooldown.

The learning rate is one pure function of the update number and of the share of the training budget used,
``learning_rate(step, budget_used, ...)``; the training loop writes it into the optimizer's param groups
before each update (``set_learning_rate``), so there is no scheduler state to save or restore.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def _check_schedule_args(warmup: int, d_model: int | None, peak_lr: float | None, scale: float) -> None:
    if warmup <= 0:
        raise ValueError(f"warmup={warmup} must be a positive number of steps (the paper uses 4000)")
    if (d_model is None) == (peak_lr is None):
        raise ValueError(
            f"give exactly one of d_model={d_model} (the paper's formula) or peak_lr={peak_lr} "
            "(the same curve rescaled so its maximum, at step == warmup, is peak_lr)"
        )
    if d_model is not None and d_model <= 0:
        raise ValueError(f"d_model={d_model} must be positive")
    if peak_lr is not None and not peak_lr > 0:
        raise ValueError(f"peak_lr={peak_lr} must be positive")
    if not scale > 0:
        raise ValueError(f"scale={scale} must be positive")


def inverse_sqrt_lr(
    step: int,
    *,
    warmup: int,
    d_model: int | None = None,
    peak_lr: float | None = None,
    scale: float = 1.0,
) -> float:
    """Learning rate at update number ``step`` (counted from 1), section 5.3.

    With ``d_model``: ``scale * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)``, the paper's formula.
    With ``peak_lr``: ``peak_lr * min(step / warmup, sqrt(warmup / step))``, the same shape with its
    maximum (reached at ``step == warmup``) equal to ``peak_lr``. Step 0 is treated as step 1, so the
    learning rate is never 0.
    """
    _check_schedule_args(warmup, d_model, peak_lr, scale)
    if step < 0:
        raise ValueError(f"step={step} must be >= 0")
    step = max(step, 1)
    if peak_lr is not None:
        return peak_lr * min(step / warmup, math.sqrt(warmup / step))
    assert d_model is not None  # checked above
    return scale * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def cooldown_factor(progress: float, fraction: float) -> float:
    """Multiplier of the learning rate that decays it linearly to 0 over the last ``fraction`` of training.

    ``progress`` is the share of the training budget used so far (0 at the start, 1 at the end, whether the
    budget is counted in updates or in minutes). Returns 1 until ``progress`` reaches ``1 - fraction``, then
    ``(1 - progress) / fraction``, clamped to [0, 1]. ``fraction=0`` leaves the schedule unchanged.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"cooldown fraction={fraction} must be in [0, 1] (0 = no cooldown, 0.2 = the last 20%)")
    if fraction == 0.0:
        return 1.0
    return min(1.0, max(0.0, (1.0 - progress) / fraction))


def learning_rate(
    step: int,
    budget_used: float,
    *,
    warmup: int,
    peak_lr: float | None = None,
    d_model: int | None = None,
    scale: float = 1.0,
    cooldown: float = 0.0,
) -> float:
    """Learning rate of update number ``step`` (counted from 1), started with ``budget_used`` of the budget spent.

    ``inverse_sqrt_lr(step, ...)`` (section 5.3: linear warmup over ``warmup`` updates, then 1/sqrt(step)) times
    ``cooldown_factor(budget_used, cooldown)`` (a linear decay to 0 over the last ``cooldown`` fraction of the
    budget, counted in updates, minutes or epochs alike). ``cooldown=0`` is the paper's schedule alone.
    """
    schedule = inverse_sqrt_lr(step, warmup=warmup, d_model=d_model, peak_lr=peak_lr, scale=scale)
    return schedule * cooldown_factor(budget_used, cooldown)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Write ``lr`` into every param group of ``optimizer`` (call it before ``optimizer.step()``)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def make_optimizer(
    params_or_model: nn.Module | Iterable[torch.Tensor] | Iterable[dict],
    lr: float,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-9,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """Adam with the paper's settings (beta1=0.9, beta2=0.98, eps=1e-9); AdamW when weight_decay > 0.

    ``lr`` is the initial rate of every param group; ``set_learning_rate`` overwrites it before each update.
    torch's fused kernel (one pass over all parameters) is used where it applies: floating-point parameters
    on the CPU or a GPU. It computes the same update as the default one; why two runs still part ways, and
    what it saves, is in docs/PERFORMANCE.md.
    """
    if not lr > 0:
        raise ValueError(f"lr={lr} must be positive")
    if weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay} must be >= 0")
    params = params_or_model.parameters() if isinstance(params_or_model, nn.Module) else params_or_model
    params = [_listed(p) if isinstance(p, dict) else p for p in params]  # read generators once
    fused = _fused_applies(params)
    if weight_decay > 0:
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused)
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, fused=fused)


def _listed(group: dict) -> dict:
    """A param group whose "params" is a list (it may be given as one tensor or a generator)."""
    tensors = group["params"]
    return {**group, "params": [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)}


def _fused_applies(params: list) -> bool | None:
    """True when every parameter is a floating-point tensor on the CPU or CUDA (fused Adam's devices)."""
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    ok = bool(tensors) and all(t.is_floating_point() and t.device.type in ("cpu", "cuda") for t in tensors)
    return True if ok else None
