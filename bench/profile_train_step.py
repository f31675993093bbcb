"""Profile one training step of the `small` model in fp32 and in bf16 autocast (CPU).

usage: python bench/profile_train_step.py [--steps 5] [--profile]
Prints ms/step and tokens/s for each mode (mean of --steps after 2 warm-up steps) and, with --profile,
torch.profiler's table of the ops that took the most time in the bf16 step.
"""

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from transformer.config import ModelConfig
from transformer.models import build_model
from transformer.training import label_smoothed_cross_entropy, make_optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model(ModelConfig.preset("small", src_vocab_size=8000, tgt_vocab_size=8000))
    optimizer = make_optimizer(model, 1e-4)
    batch, src_len, tgt_len = 110, 36, 37  # about 4,000 tokens a side, like a training batch
    src = torch.randint(4, 8000, (batch, src_len))
    tgt_in, tgt_out = torch.randint(4, 8000, (batch, tgt_len)), torch.randint(4, 8000, (batch, tgt_len))

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(src, tgt_in)
        loss, _ = label_smoothed_cross_entropy(logits, tgt_out, 0, 0.1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    for bf16 in (False, True):
        for _ in range(2):
            step(bf16)
        started = time.perf_counter()
        for _ in range(args.steps):
            step(bf16)
        seconds = (time.perf_counter() - started) / args.steps
        tokens = batch * (src_len + tgt_len)
        print(f"{'bf16' if bf16 else 'fp32'}: {seconds * 1000:.0f} ms/step, {tokens / seconds:.0f} tokens/s")
    if args.profile:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(2):
                step(True)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
