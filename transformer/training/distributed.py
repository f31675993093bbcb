"""Training on several processes: PyTorch's DistributedDataParallel, launched with torchrun.

`torchrun --nproc_per_node N -m transformer train CONFIG` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT for each process; `init_from_env` joins them into one process group (NCCL on CUDA, gloo on the CPU)
with a timeout of train.dist_timeout seconds for every collective. Without those variables (a plain
`transformer train`) nothing here runs and training is the single process it always was.

How the work is split (trainer.py): train.accumulate is the number of micro-batches of one update across all
processes, so update s consumes the same micro-batches of the global order at any world size (a run resumes
with another number of processes and continues the same sequence). Rank r takes micro-batches r, r + W, ...
of the update's group (`shard`); the loss is divided by the tokens of the whole group (`all_reduce_sum`) and
multiplied by W, since DDP averages the gradients over the ranks: N processes make the update one process
accumulating over the same micro-batches makes. Only rank 0 logs, validates and writes files; the others wait
at a barrier. Dropout draws differ per rank: equality with one process holds for dropout 0.

train.parallel=fsdp shards the model with FSDP2 (`wrap`) instead; the trainer then gathers the whole weights
and optimizer state onto rank 0 (`full_model_state`, `full_optimizer_state`, every rank taking part) before
it validates and writes the same single-file checkpoints.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """Whether torchrun (or another launcher setting its variables) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(device: torch.device, timeout_s: float) -> bool:
    """Join the process group torchrun's variables describe; False (nothing done) when not launched by it."""
    if not launched() or dist.is_initialized():
        return dist.is_initialized()
    missing = [name for name in LAUNCH_VARIABLES[:2] + LAUNCH_VARIABLES[3:] if name not in os.environ]
    if missing:
        raise ValueError(f"RANK and WORLD_SIZE are set but {', '.join(missing)} are not; launch with torchrun")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    logger.info("process %d of %d (%s, device %s)", rank(), world_size(), backend, device)
    return True


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def teardown() -> None:
    if active():
        dist.destroy_process_group()


def shard(group: list[Any]) -> list[Any]:
    """This rank's micro-batches of an update's group: numbers rank, rank + W, ..."""
    return group[rank()::world_size()]


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """`values` summed over the ranks (float64; the values themselves with one process)."""
    if not active():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def broadcast_object(value: Any) -> Any:
    """Rank 0's `value` on every rank (a picklable object)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(model: nn.Module, device: torch.device, parallel: str = "ddp") -> nn.Module:
    """`model` in DistributedDataParallel, or sharded in place by FSDP2 (`fully_shard`: each layer of its layer
    lists, then the rest) for parallel="fsdp"; the model itself with one process."""
    if not active():
        return model
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layers in [m for m in model.modules() if isinstance(m, nn.ModuleList)]:
            for layer in layers:
                fully_shard(layer)
        return Sharded(fully_shard(model))
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


class Sharded(nn.Module):
    """An FSDP-sharded model seen through its forward alone (as DDP shows it): FSDP gathers the parameters in
    the hooks of forward, so the loss must not call the model's other methods (the fused loss's states)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)


def sync_gradients(net: nn.Module, sync: bool):
    """A context in which backward reduces the gradients over the ranks only when `sync` (the last micro-batch
    of an update): DDP's no_sync, FSDP2's set_requires_gradient_sync."""
    if isinstance(net, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext() if sync else net.no_sync()
    if isinstance(net, Sharded):
        net.module.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """The sharded model's whole state dict, on the CPU, on rank 0 ({} elsewhere). Every rank must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(net.module, options=_full_options())


def full_optimizer_state(net: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's whole state (keyed by parameter name), on the CPU, on rank 0. Every rank must call it."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(net.module, optimizer, options=_full_options())


def load_full_optimizer_state(net: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a `full_optimizer_state` (read from train_state.pt on every rank) into the sharded optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if not state.get("state"):
        return  # saved before the first update: nothing to restore
    if not all(isinstance(key, str) for key in state["state"]):
        raise ValueError("this train_state.pt was written by a run without train.parallel=fsdp; resume it with "
                         "--set train.parallel=ddp")
    set_optimizer_state_dict(net.module, optimizer, state, options=StateDictOptions(full_state_dict=True))


class QuietLog:
    """What a rank other than 0 has for the run log (training/run_log.py): nothing is written or shown."""

    def start(self, step: int, saved_bytes: int | None) -> None: ...

    def record(self, record: dict) -> None: ...

    def durable_size(self) -> int:
        return 0

    def advance(self) -> None: ...

    def show(self, step: int, values: dict) -> None: ...

    def close(self) -> None: ...
