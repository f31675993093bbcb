"""Training-step throughput: ours vs torch.nn.Transformer vs Hugging Face MarianMTModel, side by side.

usage: python bench/train.py [--quick] [--threads 2,1] [--repeats 7] [--compile] [--profile fp32|bf16]

All three models have the `small` preset's dimensions (vocab 8000, d_model 256, 3+3 layers, 4 heads, d_ff
1024, dropout 0.1, tied embeddings). A step is a full training step on a batch of 32 x 32 source and 32 x 32
target tokens: forward, label-smoothed (0.1) cross-entropy, backward, gradient clipping to 1.0 and an Adam
step; in fp32 and under bf16 autocast. Ours computes its loss as the trainer does (`teacher_forced_loss`: the
output projection fused with the loss, chunk by chunk; under --compile, and in checkouts before it existed,
the full logits and `label_smoothed_cross_entropy`). Steps of all the models are interleaved (one step of each
in turn, repeated), and each figure is the median of the timed rounds after warm-up. tokens/s counts source +
target tokens (2,048 a step). MFU is model FLOPs (3 x the forward matrix products) per second over the 2048^2
matrix-product peak of the same dtype, measured in this process at the same thread count.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    D_FF,
    D_MODEL,
    N_HEADS,
    N_LAYERS,
    VOCAB,
    emit_json,
    init_interop_threads,
    machine,
    marian_config,
    matmul_peak,
    set_threads,
)

from transformer.config import ModelConfig  # noqa: E402
from transformer.models import build_model  # noqa: E402
from transformer.training import label_smoothed_cross_entropy, make_optimizer  # noqa: E402

try:  # the trainer's loss since the core restructuring (#10); before it, the unfused loss on full logits
    from transformer.training.loss import teacher_forced_loss
except ImportError:  # the code before #10, for A/B runs (PYTHONPATH=<an old checkout>)
    teacher_forced_loss = None

BATCH, SRC_LEN, TGT_LEN, PAD = 32, 32, 32, 0


class TorchTransformer(nn.Module):
    """torch.nn.Transformer with a tied, scaled token embedding, sinusoidal positions and an output projection."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D_MODEL, padding_idx=PAD)
        self.transformer = nn.Transformer(
            D_MODEL, N_HEADS, N_LAYERS, N_LAYERS, D_FF, dropout=0.1, batch_first=True
        )
        self.dropout = nn.Dropout(0.1)
        self.out = nn.Linear(D_MODEL, VOCAB, bias=False)
        self.out.weight = self.embed.weight
        position = torch.arange(512.0)[:, None]
        inv_freq = torch.exp(torch.arange(0, D_MODEL, 2) * (-math.log(10000.0) / D_MODEL))
        table = torch.zeros(512, D_MODEL)
        table[:, 0::2], table[:, 1::2] = torch.sin(position * inv_freq), torch.cos(position * inv_freq)
        self.register_buffer("positions", table)

    def _embed(self, ids: Tensor) -> Tensor:
        return self.dropout(self.embed(ids) * math.sqrt(D_MODEL) + self.positions[: ids.size(1)])

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        pad = src == PAD
        causal = nn.Transformer.generate_square_subsequent_mask(tgt.size(1), device=tgt.device)
        hidden = self.transformer(
            self._embed(src), self._embed(tgt), tgt_mask=causal, src_key_padding_mask=pad,
            memory_key_padding_mask=pad, tgt_is_causal=True,
        )
        return self.out(hidden)


def forward_flops() -> float:
    """FLOPs of the forward matrix products of one batch (2 per multiply-add; embeddings not counted)."""
    d, f, s, t = D_MODEL, D_FF, SRC_LEN, TGT_LEN
    encoder = N_LAYERS * (4 * d * d + 2 * d * f + 2 * s * d) * s  # projections, FFN, QK^T and AV
    decoder = N_LAYERS * ((6 * d * d + 2 * d * f + 2 * t * d + 2 * s * d) * t + 2 * d * d * s)  # + cross K, V
    output = d * VOCAB * t
    return 2.0 * BATCH * (encoder + decoder + output)


def smoothed_ce(logits: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(logits.float().view(-1, VOCAB), target.view(-1), ignore_index=PAD, label_smoothing=0.1)


def make_step(
    model: nn.Module, loss_of: Callable, optimizer: torch.optim.Optimizer, bf16: bool
) -> Callable[[Tensor, Tensor, Tensor], None]:
    """One training step; ``loss_of(src, tgt_in, tgt_out)`` runs the forward pass and the loss under autocast."""

    def step(src: Tensor, tgt_in: Tensor, tgt_out: Tensor) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_of(src, tgt_in, tgt_out)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def build_contenders(with_compile: bool) -> dict[str, Callable]:
    """(model, mode) -> one training step."""
    from transformers import MarianMTModel

    torch.manual_seed(0)
    ours = build_model(ModelConfig.preset("small", src_vocab_size=VOCAB, tgt_vocab_size=VOCAB)).train()
    ours_opt = make_optimizer(ours, 1e-4)

    def ours_loss_of(model: nn.Module, fused: bool = teacher_forced_loss is not None) -> Callable:
        """The trainer's loss: the fused output projection + label smoothing (the full logits before #10)."""
        if fused:
            return lambda src, tgt_in, tgt_out: teacher_forced_loss(model, src, tgt_in, tgt_out, PAD, 0.1)[0]
        return lambda src, tgt_in, tgt_out: label_smoothed_cross_entropy(model(src, tgt_in), tgt_out, PAD, 0.1)[0]

    torch_model = TorchTransformer().train()
    torch_opt = torch.optim.Adam(torch_model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)
    hf = MarianMTModel(marian_config(dropout=0.1)).train()
    hf_opt = torch.optim.Adam(hf.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)

    def hf_forward(src: Tensor, tgt: Tensor) -> Tensor:
        return hf(input_ids=src, attention_mask=(src != PAD).long(), decoder_input_ids=tgt).logits

    def peer_loss_of(forward: Callable) -> Callable:
        return lambda src, tgt_in, tgt_out: smoothed_ce(forward(src, tgt_in), tgt_out)

    steps = {}
    for mode, bf16 in (("fp32", False), ("bf16", True)):
        steps[("ours", mode)] = make_step(ours, ours_loss_of(ours), ours_opt, bf16)
        steps[("torch.nn", mode)] = make_step(torch_model, peer_loss_of(torch_model), torch_opt, bf16)
        steps[("hf-marian", mode)] = make_step(hf, peer_loss_of(hf_forward), hf_opt, bf16)
    if with_compile:
        compiled = ours_loss_of(torch.compile(ours), fused=False)
        steps[("ours", "bf16+compile")] = make_step(ours, compiled, ours_opt, True)
    return steps


def run(threads: int, steps: dict, repeats: int, warmup: int) -> dict:
    set_threads(threads)
    g = torch.Generator().manual_seed(threads)
    src = torch.randint(4, VOCAB, (BATCH, SRC_LEN), generator=g)
    tgt_in = torch.randint(4, VOCAB, (BATCH, TGT_LEN), generator=g)
    tgt_out = torch.randint(4, VOCAB, (BATCH, TGT_LEN), generator=g)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    for key, step in steps.items():
        started = time.perf_counter()
        for _ in range(warmup):
            step(src, tgt_in, tgt_out)
        print(f"  warm-up {key[0]:9s} {key[1]:12s} {time.perf_counter() - started:6.1f} s", flush=True)
    times: dict = {key: [] for key in steps}
    for _ in range(repeats):  # interleaved, so a slow spell of the machine hits every contender alike
        for key, step in steps.items():
            started = time.perf_counter()
            step(src, tgt_in, tgt_out)
            times[key].append(time.perf_counter() - started)
    return {"peaks": peaks, "seconds": {key: statistics.median(t) for key, t in times.items()}, "all": times}


def report(threads: int, result: dict) -> dict:
    tokens = BATCH * (SRC_LEN + TGT_LEN)
    flops = 3 * forward_flops()
    sec = result["seconds"]
    peaks = result["peaks"]
    print(f"\n{threads} thread(s): matmul 2048^2 peak fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s; model {flops / 1e9:.1f} GFLOP/step")
    print(f"{'model':10s} {'mode':13s} {'ms/step':>8s} {'tokens/s':>9s} {'vs torch.nn':>11s} {'vs HF':>7s} "
          f"{'vs HF fp32':>10s} {'MFU':>6s}  runs (ms)")
    figures = {}
    for (name, mode), seconds in sec.items():
        base_mode = "fp32" if mode == "fp32" else "bf16"
        mfu = flops / seconds / peaks[base_mode]
        vs_torch = sec[("torch.nn", base_mode)] / seconds
        vs_hf = sec[("hf-marian", base_mode)] / seconds
        vs_hf32 = sec[("hf-marian", "fp32")] / seconds
        runs = " ".join(f"{t * 1000:.0f}" for t in result["all"][(name, mode)])
        print(f"{name:10s} {mode:13s} {seconds * 1000:8.0f} {tokens / seconds:9.0f} {vs_torch:10.2f}x "
              f"{vs_hf:6.2f}x {vs_hf32:9.2f}x {mfu:6.1%}  {runs}")
        figures[(name, mode)] = {"tokens_s": tokens / seconds, "mfu": mfu, "vs_hf_fp32": vs_hf32}
    ours = {mode: f for (name, mode), f in figures.items() if name == "ours"}
    best_mode = max(ours, key=lambda m: ours[m]["tokens_s"])
    return {
        "fp32_vs_hf": round(ours["fp32"]["vs_hf_fp32"], 3),
        "best_vs_hf_fp32": round(ours[best_mode]["vs_hf_fp32"], 3),
        "best_mode": best_mode,
        "mfu_fp32": round(ours["fp32"]["mfu"], 3),
        "mfu_best": round(ours[best_mode]["mfu"], 3),
        "bf16_vs_hf_bf16": round(sec[("hf-marian", "bf16")] / sec[("ours", "bf16")], 3),
        "fp32_vs_torch": round(sec[("torch.nn", "fp32")] / sec[("ours", "fp32")], 3),
        "bf16_vs_torch_bf16": round(sec[("torch.nn", "bf16")] / sec[("ours", "bf16")], 3),
        "tokens_s": {f"{n}/{m}": round(f["tokens_s"]) for (n, m), f in figures.items()},
        "peak_gflops": {k: round(v / 1e9) for k, v in peaks.items()},
    }


def profile_steps(steps: dict, threads: int, mode: str) -> None:
    """torch.profiler's top ops of ours and of HF Marian for one mode (3 steps after 3 warm-up steps)."""
    from torch.profiler import ProfilerActivity, profile

    set_threads(threads)
    src = torch.randint(4, VOCAB, (BATCH, SRC_LEN))
    tgt_in, tgt_out = torch.randint(4, VOCAB, (BATCH, TGT_LEN)), torch.randint(4, VOCAB, (BATCH, TGT_LEN))
    for name in ("ours", "hf-marian"):
        step = steps[(name, mode)]
        for _ in range(3):
            step(src, tgt_in, tgt_out)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                step(src, tgt_in, tgt_out)
        print(f"\n{name}, {mode}, {threads} thread(s), 3 steps:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="2,1", help="comma-separated thread counts (default 2,1)")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (median reported; default 7)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up steps per contender (default 2)")
    parser.add_argument("--compile", action="store_true", help="also time ours under torch.compile (bf16)")
    parser.add_argument("--quick", action="store_true", help="2 threads only, 5 rounds, 1 warm-up")
    parser.add_argument("--profile", choices=["fp32", "bf16"], help="print torch.profiler tables instead")
    args = parser.parse_args()
    init_interop_threads()
    threads = [int(t) for t in args.threads.split(",")]
    if args.quick:
        threads, args.repeats, args.warmup = [2], 5, 1
    print(f"machine: {machine()}")
    steps = build_contenders(args.compile)
    if args.profile:
        profile_steps(steps, threads[0], args.profile)
        return
    figures = {}
    for n in threads:
        result = run(n, steps, args.repeats, args.warmup + (2 if args.compile else 0))
        figures[n] = report(n, result)
    headline = figures[2] if 2 in figures else figures[threads[0]]
    out = {k: headline[k] for k in ("fp32_vs_hf", "best_vs_hf_fp32", "mfu_fp32", "mfu_best", "best_mode")}
    out["threads"] = 2 if 2 in figures else threads[0]
    out["by_threads"] = {str(n): f for n, f in figures.items()}
    out["load_avg_end"] = machine()["load_avg"]
    emit_json(out)


if __name__ == "__main__":
    main()
