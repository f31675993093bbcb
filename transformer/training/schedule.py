"""Adam and the warmup / inverse-square-root learning-rate schedule of section 5.3."""

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


def make_optimizer(
    params_or_model: nn.Module | Iterable[torch.Tensor] | Iterable[dict],
    lr: float,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-9,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """Adam with the paper's settings (beta1=0.9, beta2=0.98, eps=1e-9); AdamW when weight_decay > 0.

    ``lr`` is the constant rate used without a scheduler; ``make_scheduler`` overrides it.
    """
    if not lr > 0:
        raise ValueError(f"lr={lr} must be positive")
    if weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay} must be >= 0")
    params = params_or_model.parameters() if isinstance(params_or_model, nn.Module) else params_or_model
    if weight_decay > 0:
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps)


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    warmup: int,
    d_model: int | None = None,
    peak_lr: float | None = None,
    scale: float = 1.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR that sets every param group's lr to ``inverse_sqrt_lr`` of the coming update.

    Call ``optimizer.step()`` then ``scheduler.step()`` once per update. Update n (counted from 1) runs
    with ``inverse_sqrt_lr(n)``: after k calls to ``scheduler.step()`` the groups' lr is
    ``inverse_sqrt_lr(k + 1)``. The groups' base lr is set to 1.0, so the lambda's value is the lr.
    """
    _check_schedule_args(warmup, d_model, peak_lr, scale)
    for group in optimizer.param_groups:
        group["lr"] = 1.0
        group["initial_lr"] = 1.0

    def lr_at(epoch: int) -> float:
        return inverse_sqrt_lr(epoch + 1, warmup=warmup, d_model=d_model, peak_lr=peak_lr, scale=scale)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
