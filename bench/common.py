"""Helpers the benches share: threads, timing, the machine's matrix-product peak, the HF Marian peer.

Not a test module and not part of the package: the benches import it as a sibling script.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable

import torch

# The model every bench measures: the `small` preset and a Marian model of the same dimensions.
VOCAB, D_MODEL, N_HEADS, D_FF, N_LAYERS = 8000, 256, 4, 1024, 3


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def init_interop_threads() -> None:
    """One inter-op thread, as the peers were measured (call once, before any parallel work)."""
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already started
        pass


def machine() -> dict:
    """CPU model, core count and load, for the record printed with every result."""
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of `repeats` calls of fn after `warmup` calls; also every time measured."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an n x n matrix product in `dtype` at the current thread count (median of repeats)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    seconds, _ = median_time(lambda: a @ b, repeats, warmup=2)
    return 2 * n**3 / seconds


def marian_config(dropout: float = 0.1):
    """A Hugging Face MarianConfig with the `small` preset's dimensions (pad 0, EOS 1, start token 0)."""
    from transformers import MarianConfig

    return MarianConfig(
        vocab_size=VOCAB, d_model=D_MODEL,
        encoder_layers=N_LAYERS, decoder_layers=N_LAYERS,
        encoder_attention_heads=N_HEADS, decoder_attention_heads=N_HEADS,
        encoder_ffn_dim=D_FF, decoder_ffn_dim=D_FF,
        activation_function="relu", max_position_embeddings=512,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, forced_eos_token_id=None,
        scale_embedding=True, dropout=dropout, attention_dropout=0.0, activation_dropout=0.0,
    )


def emit_json(figures: dict) -> None:
    """The last line every bench prints: its figures as one JSON object."""
    print(json.dumps(figures, sort_keys=False))
