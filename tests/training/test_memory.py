import os

import pytest

from transformer.training.memory import CACHE_VARIABLES, KERNEL_CACHE_CAPACITY, bound_kernel_caches, release_free_memory


def test_bound_kernel_caches_sets_unset_capacities_and_keeps_the_users(monkeypatch):
    for name in CACHE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "1024")  # the user's choice wins
    settings = bound_kernel_caches()
    assert settings == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(KERNEL_CACHE_CAPACITY), "LRU_CACHE_CAPACITY": "1024"}
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(KERNEL_CACHE_CAPACITY)


def test_bound_kernel_caches_refuses_zero(monkeypatch):
    for name in CACHE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="capacity=0.*LRU_CACHE_CAPACITY=0 crashes"):
        bound_kernel_caches(0)
    assert all(name not in os.environ for name in CACHE_VARIABLES)


def test_release_free_memory_runs():
    assert release_free_memory() in (True, False)  # False without glibc
