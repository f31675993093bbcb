"""Bounded memory for long CPU training runs: oneDNN's kernel caches and the C allocator's free pages.

Two process-wide settings, applied explicitly by `transformer train` at start-up (measured in
docs/PERFORMANCE.md, "Training memory"):

- ``bound_kernel_caches``: under bf16 autocast on the CPU, every matrix product runs as a oneDNN primitive,
  and each new shape (batch x length changes with almost every token-budget batch) compiles and caches a
  new one, in oneDNN's primitive cache and in ideep's LRU cache (1,024 entries each by default, about 0.3 MB
  an entry). A training run's resident memory then grows by ~8 MB a step for the first thousand steps or
  so, and the cached entries, allocated between the tensors of the steps, keep the freed memory around
  them from being reused or returned (fragmentation). A step of one shape uses ~21 distinct primitives, so
  a capacity of 32 keeps every reuse within a step (and the fused loss's fixed chunk shapes across steps).
- ``release_free_memory``: glibc keeps freed memory inside its heaps; ``malloc_trim(0)`` returns the free
  pages to the system. Called after validation, which allocates tensors of other shapes than training.

Both are no-ops where they do not apply (no glibc; a capacity the user already set in the environment).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger(__name__)

# Entries per cache: more than the ~21 distinct matrix-product primitives of one training step of the
# encoder-decoder under bf16 autocast (counted with ONEDNN_VERBOSE=1), so nothing is rebuilt within a step.
KERNEL_CACHE_CAPACITY = 32

# oneDNN reads its capacity from ONEDNN_PRIMITIVE_CACHE_CAPACITY; ideep (PyTorch's oneDNN wrapper) from
# LRU_CACHE_CAPACITY. Both are read once, when the first primitive is created in the process.
_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


def bound_kernel_caches(capacity: int = KERNEL_CACHE_CAPACITY) -> dict[str, str]:
    """Cap oneDNN's and ideep's kernel caches at ``capacity`` entries, unless the environment sets them.

    Call it before the process's first bf16 matrix product (the caches read their capacity once, at their
    first use); later calls change nothing. A value already in the environment is kept, so a user can
    choose another. Returns the values in effect. ``capacity`` must be at least 1: LRU_CACHE_CAPACITY=0
    crashes the process (torch 2.13) at its first bf16 product.
    """
    if capacity < 1:
        raise ValueError(f"kernel cache capacity={capacity} must be at least 1 (LRU_CACHE_CAPACITY=0 crashes torch)")
    settings = {}
    for name in _CACHE_VARIABLES:
        settings[name] = os.environ.setdefault(name, str(capacity))
    logger.debug("kernel caches: %s", settings)
    return settings


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None  # glibc only (not musl, macOS, Windows)


def release_free_memory() -> bool:
    """Return the C allocator's free pages to the system (glibc ``malloc_trim(0)``). False without glibc.

    Only memory that is already free is released: tensors in use are untouched, and pages released here are
    mapped again (zero-filled) when the allocator reuses them.
    """
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def resident_mb() -> tuple[float, float] | None:
    """(current, peak) resident memory of this process in MB from /proc/self/status; None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        return None
