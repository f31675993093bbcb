"""Peak memory of an encoder forward pass against sequence length (fused attention vs the explicit reference).

usage: python bench/memory.py [--quick] [--lengths 1024,2048,4096,8192,16384] [--threads 2]

The `small` model's encoder (d_model 256, 4 heads, 3 layers, d_ff 1024) encodes one sequence of T tokens
(batch 1, fp32, inference mode):
- fast: `model.encode(src)`, attention through F.scaled_dot_product_attention (need_weights=False), which
  never holds the (T, T) score matrix;
- reference: `model.encode(src, need_weights=True)`, the explicit softmax(Q K^T / sqrt(Dh)) V that returns
  the weights, so (H, T, T) scores and weights exist, and each layer keeps its weights for inspection.
Each measurement runs in a fresh subprocess: the peak resident memory (VmHWM, reset through
/proc/self/clear_refs just before the pass; ru_maxrss where that is unavailable) minus the resident memory
before it, so one measurement's peak never mixes into another's. The growth exponent is the least-squares
slope of log(peak) against log(T). A reference length whose estimated peak exceeds half the available memory
is skipped, with a note. The last line is one JSON object.

Training memory (our trainer against the HF peer's loop, and a phase-by-phase probe): bench/train_memory.py.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import D_MODEL, N_HEADS, N_LAYERS, VOCAB, emit_json, machine  # noqa: E402

MB = 2**20
ROOT = Path(__file__).resolve().parent.parent


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(length: int, path: str, threads: int) -> None:
    """One measurement, printed as a JSON line (run in its own process)."""
    import torch

    from transformer.config import ModelConfig
    from transformer.models import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(ModelConfig.preset("small", src_vocab_size=VOCAB, tgt_vocab_size=VOCAB)).eval()
    src = torch.randint(4, VOCAB, (1, length))
    reference = path == "reference"
    with torch.inference_mode():
        model.encode(src[:, :64], need_weights=reference)  # load the kernels on a short input
    for layer in model.encoder.layers:
        layer.attn_weights = None
    gc.collect()
    can_reset = _reset_peak()
    before_kb = _status_kb("VmRSS") or 0
    maxrss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with torch.inference_mode():
        memory = model.encode(src, need_weights=reference)  # (1, T, D)
    seconds = time.perf_counter() - started
    peak_kb = _status_kb("VmHWM") if can_reset else None
    if peak_kb is None:  # ru_maxrss is the process's lifetime peak: only its growth is attributable
        peak_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, maxrss_before_kb)
        before_kb = maxrss_before_kb
    print(json.dumps({
        "length": length, "path": path, "peak_mb": (peak_kb - before_kb) / 1024, "seconds": seconds,
        "method": "VmHWM" if can_reset else "ru_maxrss", "output_mb": memory.numel() * 4 / MB,
    }))


def available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def reference_estimate_mb(length: int) -> float:
    """Scores and weights of one layer in flight, plus each layer's kept weights: (L + 2) x H x T^2 floats."""
    return (N_LAYERS + 2) * N_HEADS * length**2 * 4 / MB


def exponent(points: dict[int, float]) -> float | None:
    """Least-squares slope of log(peak) against log(length)."""
    xs = [math.log(n) for n, mb in points.items() if mb > 0]
    ys = [math.log(mb) for mb in points.values() if mb > 0]
    if len(xs) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="1024,2048,4096,8192,16384")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="lengths 1024, 2048, 4096 only")
    parser.add_argument("--child", nargs=2, metavar=("LENGTH", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), args.child[1], args.threads)
        return
    lengths = [1024, 2048, 4096] if args.quick else [int(n) for n in args.lengths.split(",")]
    print(f"machine: {machine()}; available memory {available_mb():.0f} MB; "
          f"encoder d_model {D_MODEL}, {N_HEADS} heads, {N_LAYERS} layers, batch 1, fp32")
    results: dict[str, dict[int, float]] = {"fast": {}, "reference": {}}
    seconds: dict[str, dict[int, float]] = {"fast": {}, "reference": {}}
    skipped = []
    print(f"{'path':10s} {'T':>6s} {'peak MB':>9s} {'seconds':>8s}")
    for length in lengths:
        for path in ("fast", "reference"):
            if path == "reference" and reference_estimate_mb(length) > available_mb() / 2:
                note = (f"reference T={length} skipped: estimated peak {reference_estimate_mb(length):.0f} MB "
                        f"> half the available {available_mb():.0f} MB")
                print(note)
                skipped.append(note)
                continue
            command = [sys.executable, __file__, "--child", str(length), path, "--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                note = f"{path} T={length} failed (exit {done.returncode}): {done.stderr.strip()[-300:]}"
                print(note)
                skipped.append(note)
                continue
            record = json.loads(done.stdout.strip().splitlines()[-1])
            results[path][length] = round(record["peak_mb"], 1)
            seconds[path][length] = round(record["seconds"], 2)
            print(f"{path:10s} {length:6d} {record['peak_mb']:9.1f} {record['seconds']:8.2f}  ({record['method']})",
                  flush=True)
    fits = {path: exponent(points) for path, points in results.items()}
    # Fixed costs (weights, buffers) flatten the small lengths; the last doubling shows the asymptote.
    last = {path: exponent(dict(list(points.items())[-2:])) for path, points in results.items()}
    for path, slope in fits.items():
        if slope is not None:
            print(f"{path}: peak grows as T^{slope:.2f} over all lengths, T^{last[path]:.2f} over the last two")
    common = [n for n in results["fast"] if n in results["reference"]]
    if common:
        n = max(common)
        print(f"at T={n}: reference / fast = {results['reference'][n] / max(results['fast'][n], 0.1):.0f}x")
    emit_json({
        "fast_peak_mb": results["fast"], "reference_peak_mb": results["reference"],
        "fast_exponent": None if fits["fast"] is None else round(fits["fast"], 2),
        "reference_exponent": None if fits["reference"] is None else round(fits["reference"], 2),
        "fast_exponent_last_two": None if last["fast"] is None else round(last["fast"], 2),
        "reference_exponent_last_two": None if last["reference"] is None else round(last["reference"], 2),
        "seconds": seconds, "skipped": skipped, "threads": args.threads,
    })


if __name__ == "__main__":
    main()
