"""Where a command runs (--device) and in what precision.

`--device auto` (the default) takes CUDA, then Apple's MPS, then the CPU; `cpu`, `cuda`, `cuda:N` and `mps`
name one. A device that is not available is a one-line ValueError naming it and what is available.

The precision of training follows train.bf16 (fp32 by default) and the device (`precision`): bf16 autocast on
the CPU as before; on CUDA bf16 where the GPU supports it, otherwise fp16 autocast with a GradScaler.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions: the command line imports DEVICE_HELP without it (a fast --help)
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
DEVICE_HELP = f"where to run: {DEVICE_CHOICES} (default auto: CUDA, then MPS, then the CPU)"


def available_devices() -> list[str]:
    """The devices this machine offers, as --device names."""
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def resolve_device(name: str | torch.device | None = "auto", local_rank: int | None = None) -> torch.device:
    """The torch.device for a --device value. Under torchrun, plain `cuda` means this process's GPU, cuda:LOCAL_RANK."""
    import torch

    name = "auto" if name is None else str(name)
    available = available_devices()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if "mps" in available else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name} is not a device name; use {DEVICE_CHOICES}") from None
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank or 0)
    label = "mps" if device.type == "mps" else str(device)
    if device.type not in ("cpu", "cuda", "mps") or label not in available:
        raise ValueError(f"--device {name} is not available on this machine; available: {', '.join(available)}")
    return device


def model_device(model: Any) -> torch.device:
    """The device of `model`'s parameters, where its inputs must be: the CPU for a model without any, or for an
    object of the decoding protocol that is not an nn.Module (the scripted models of the tests)."""
    import torch

    parameters = getattr(model, "parameters", None)
    if not callable(parameters):
        return torch.device("cpu")
    return next((p.device for p in parameters()), torch.device("cpu"))


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is worth using on `device` (CUDA: compute capability 8 and above)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type in ("cpu", "mps")


def precision(device_type: str, bf16: bool, supported: bool) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype, or None for fp32 throughout; whether a GradScaler is needed) for training.

    train.bf16=false is fp32 on every device. With train.bf16=true: bf16 autocast where `supported` (the CPU,
    recent GPUs); on a CUDA GPU without bf16, fp16 autocast with a GradScaler; elsewhere (MPS without bf16)
    fp32, as fp16 without loss scaling would underflow.
    """
    import torch

    if not bf16:
        return None, False
    if supported:
        return torch.bfloat16, False
    if device_type == "cuda":
        return torch.float16, True
    return None, False


def move_to(value: Any, device: torch.device) -> Any:
    """`value` (a tensor, or a batch: a dataclass, tuple, list or dict of them) with its tensors on `device`."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: move_to(getattr(value, f.name), device) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    if isinstance(value, (list, tuple)):
        return type(value)(move_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: move_to(v, device) for k, v in value.items()}
    return value
