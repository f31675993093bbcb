"""Fused Adam against torch's default one: step time, and why two training runs part ways.

usage: python bench/adam.py [--copy-task]

1. Step time of Adam over the `small` model's parameters (random gradients), default vs fused, 1 and 2
   threads, median of 15 steps.
2. Two `tiny` models from the same seed trained on the same batches, one per implementation: the largest
   parameter difference after each of 5 steps, and which parameter holds it.
3. With --copy-task: the copy task of tests/models/test_learning.py with each, seeds 0-2 (minutes).
Used for "Adam: fused and default" in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "models"))
from test_learning import PAD, VOCAB, _batch, train_until_exact  # noqa: E402

from transformer.config import ModelConfig  # noqa: E402
from transformer.models import build_model  # noqa: E402
from transformer.training import label_smoothed_cross_entropy  # noqa: E402


def adam(params, fused: bool) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.98), eps=1e-9, fused=True if fused else None)


def tiny(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig.preset("tiny", src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, dropout=0.0))


def step_times() -> None:
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for fused in (False, True):
            torch.manual_seed(0)
            model = build_model(ModelConfig.preset("small", src_vocab_size=8000, tgt_vocab_size=8000))
            for p in model.parameters():
                p.grad = torch.randn_like(p)
            optimizer = adam(model.parameters(), fused)
            times = []
            for i in range(18):
                started = time.perf_counter()
                optimizer.step()
                if i >= 3:
                    times.append(time.perf_counter() - started)
            name = "fused" if fused else "default"
            print(f"{threads} thread(s) {name}: {statistics.median(times) * 1000:.1f} ms/step")


def divergence() -> None:
    torch.set_num_threads(1)
    a = tiny(0)
    b = copy.deepcopy(a)
    opt_a, opt_b = adam(a.parameters(), False), adam(b.parameters(), True)
    batches = torch.Generator().manual_seed(5)
    for step in range(1, 6):
        src, tgt_in, tgt_out = _batch(batches, 64, "copy")
        for model, optimizer in ((a, opt_a), (b, opt_b)):
            loss, _ = label_smoothed_cross_entropy(model(src, tgt_in), tgt_out, PAD, epsilon=0.0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        diff, name = max(((pa - pb).abs().max().item(), n)
                         for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True))
        print(f"step {step}: max |parameter difference| {diff:.2e} ({name})")


def copy_task(seed: int, fused: bool) -> tuple[float, int]:
    """The copy task of tests/models/test_learning.py with one Adam: (exact match, updates made)."""
    model = tiny(seed)
    return train_until_exact(model, adam(model.parameters(), fused), "copy", torch.Generator().manual_seed(seed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copy-task", action="store_true", help="also the copy task with each, seeds 0-2")
    args = parser.parse_args()
    step_times()
    divergence()
    if args.copy_task:
        for seed in (0, 1, 2):
            for fused in (False, True):
                exact, step = copy_task(seed, fused)
                name = "fused" if fused else "default"
                print(f"copy task seed {seed} {name}: exact match {exact:.0%} at update {step}")


if __name__ == "__main__":
    main()
