"""Bounded memory for long CPU training runs: the capacity of oneDNN's kernel caches, and the C allocator's
free pages.

Under bf16 autocast on the CPU every matrix product runs as a oneDNN primitive, compiled for its exact shapes
and cached twice, in oneDNN's primitive cache and in ideep's LRU cache (PyTorch's oneDNN wrapper), 1,024
entries each by default. Token-budget batches change shape at almost every update, so each update adds new
entries: the `small` model's training grew by ~8 MB an update, and the cached entries, allocated between the
tensors of the updates, kept the memory freed around them inside the allocator (fragmentation): 3.8 GB
resident after 300 updates of the demo config, 1.46 GB with the caches bounded (docs/PERFORMANCE.md,
"Training memory"). The trainer therefore calls ``bound_kernel_caches`` first.

After each validation it also calls ``release_free_memory`` (glibc's ``malloc_trim(0)``): the memory freed by
the updates and by validation stays resident inside glibc's heaps (about 700 MB for the demo config), and
trimming returns it to the system until the next update needs it again. That lowers the memory the run
holds between updates, not its peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger(__name__)

# Entries per cache: more than the ~21 distinct matrix-product primitives of one update of the encoder-decoder
# under bf16 autocast (counted with ONEDNN_VERBOSE=1) and the fused loss's few fixed chunk shapes, so nothing
# is rebuilt within an update. Measured CPU time per update: the same with 16 or 32 entries as with 1,024, a
# third more with no cache.
KERNEL_CACHE_CAPACITY = 32

# oneDNN reads its capacity from ONEDNN_PRIMITIVE_CACHE_CAPACITY; ideep from LRU_CACHE_CAPACITY. Each is read
# once per process, when its cache is first used (the first bf16 matrix product).
CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


def bound_kernel_caches(capacity: int = KERNEL_CACHE_CAPACITY) -> dict[str, str]:
    """Cap oneDNN's and ideep's kernel caches at ``capacity`` entries each, unless the environment sets them.

    A process-wide setting, through the two environment variables of ``CACHE_VARIABLES``: call it before the
    process's first bf16 matrix product (later calls change nothing that is already read). A value already in
    the environment is kept, so a user can choose another (1024 restores the libraries' default). Returns
    the values in effect. ``capacity`` must be at least 1: LRU_CACHE_CAPACITY=0 crashes torch 2.13 at its
    first bf16 product.
    """
    if capacity < 1:
        raise ValueError(f"kernel cache capacity={capacity} must be at least 1 (LRU_CACHE_CAPACITY=0 crashes torch)")
    settings = {name: os.environ.setdefault(name, str(capacity)) for name in CACHE_VARIABLES}
    logger.debug("kernel cache capacities: %s", settings)
    return settings


def release_free_memory() -> bool:
    """Return the free pages inside the C allocator's heaps to the system (glibc ``malloc_trim(0)``).

    Only memory already freed is released; pages are mapped again, zero-filled, when the allocator reuses
    them. Returns False where there is no glibc (musl, macOS, Windows), doing nothing.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        libc = None
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True
