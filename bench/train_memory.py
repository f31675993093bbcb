"""Peak memory of training: the `small` preset on the demo data against the Hugging Face peer's loop.

usage: python bench/train_memory.py [--steps 100] [--threads 2] [--contenders ours,hf-fp32,...]
       python bench/train_memory.py --probe [--steps 60] [--eval-every 30] [--threads 2]

Each contender trains for --steps updates in a fresh subprocess on configs/bible-de-en-demo.yaml's data
(German -> English Bible, BPE 8,000, batches of 4,096 tokens a side, same sampler and seed), and reports its
peak resident memory (VmHWM at the end: the whole process, imports, corpus and tokenizer included), its
resident memory once set up (before the first update) and at the end:
- ours: the project's Trainer, as `transformer train` runs it (bf16 autocast, the fused output projection +
  loss, kernel caches bounded by transformer.training.memory.bound_kernel_caches, one validation at the end);
- ours-default-caches: the same with oneDNN's and ideep's default cache capacities (1,024 entries each), as
  before bound_kernel_caches;
- hf-bf16, hf-fp32: HF MarianMTModel of the same dimensions (bench/common.py) in a plain loop over the same
  batches: forward (under bf16 autocast or in fp32), F.cross_entropy(label_smoothing=0.1), backward, clipping
  to 1.0, torch.optim.Adam; no validation.

--probe: one training run of the demo config in this process (the project's Trainer, --steps updates,
validation every --eval-every), printing after each phase and every 10 updates the resident memory (VmRSS),
its peak (VmHWM), glibc's bytes in use and free bytes kept inside its heaps (mallinfo2), the number of glibc
arenas and the CPU time: where the memory goes. Environment variables such as ONEDNN_PRIMITIVE_CACHE_CAPACITY,
LRU_CACHE_CAPACITY or MALLOC_ARENA_MAX set before it apply to it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit_json, machine, marian_config  # noqa: E402
from memory import MB, ROOT, _status_kb, available_mb  # noqa: E402

TRAIN_CONFIG = ROOT / "configs" / "bible-de-en-demo.yaml"
CONTENDERS = ("ours", "ours-default-caches", "hf-bf16", "hf-fp32")
DEFAULT_CACHES = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024", "LRU_CACHE_CAPACITY": "1024"}  # oneDNN's, ideep's


class _RssSampler:
    """Resident memory of this process every `interval` seconds, in a daemon thread: (seconds, MB) pairs."""

    def __init__(self, interval: float = 1.0):
        import threading

        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._start = time.perf_counter()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.samples.append((time.perf_counter() - self._start, (_status_kb("VmRSS") or 0) / 1024))

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        self._thread.join()
        return self.samples


def _train_config(steps: int, threads: int, eval_every: int | None = None):
    """The demo config for `steps` updates, validated every `eval_every` (default: once, at the end)."""
    from transformer.config import RunConfig

    return RunConfig.load(str(TRAIN_CONFIG), [
        f"train.max_steps={steps}", "train.max_minutes=null", f"train.eval_every={eval_every or steps}",
        f"train.threads={threads}", f"train.log_every={max(steps // 5, 1)}",
    ])


def _train_ours(steps: int, threads: int) -> dict:
    """The project's Trainer for `steps` updates (one validation, at the end), in a temporary model directory."""
    import tempfile

    from transformer.training.memory import bound_kernel_caches

    caches = bound_kernel_caches()  # what `transformer train` does first (the environment may override it)
    from transformer.training.trainer import Trainer

    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(_train_config(steps, threads), out, progress_bar=False)
        setup_mb = (_status_kb("VmRSS") or 0) / 1024
        trainer.train()
        return {"setup_rss_mb": setup_mb, "steps": trainer.state.step, "caches": caches}


def _train_hf(steps: int, threads: int, bf16: bool) -> dict:
    """HF MarianMTModel in a plain loop over the same batches (same tokenizer, sampler, seed) as ours."""
    import torch
    import torch.nn.functional as F
    from transformers import MarianMTModel

    from transformer.data.batching import TokenBatchSampler, batches, encode_corpus
    from transformer.data.datasets import load_split
    from transformer.data.tokenizer import train_bpe

    config = _train_config(steps, threads)
    data, t = config.data, config.train
    torch.set_num_threads(threads)
    torch.manual_seed(t.seed)
    train = load_split(data, "train")
    tok = train_bpe(train.src + train.tgt, data.vocab_size, data.min_frequency)
    pairs = encode_corpus(train, tok, data.max_len)
    sampler = TokenBatchSampler.from_pairs(pairs, t.max_tokens, shuffle=True, seed=t.seed)
    hf_config = marian_config(dropout=0.1)
    hf_config.vocab_size, hf_config.pad_token_id = tok.vocab_size, tok.pad_id
    hf_config.eos_token_id, hf_config.decoder_start_token_id = tok.eos_id, tok.bos_id
    model = MarianMTModel(hf_config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-9)
    setup_mb = (_status_kb("VmRSS") or 0) / 1024
    done = 0
    while done < steps:
        for batch in batches(pairs, sampler, tok.pad_id, tok.bos_id, tok.eos_id):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(input_ids=batch.src, attention_mask=(batch.src != tok.pad_id).long(),
                               decoder_input_ids=batch.tgt_in).logits
            loss = F.cross_entropy(logits.float().flatten(0, 1), batch.tgt_out.flatten(), ignore_index=tok.pad_id,
                                   label_smoothing=t.label_smoothing)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1
            if done == steps:
                break
        sampler.set_epoch(sampler.epoch + 1)
    return {"setup_rss_mb": setup_mb, "steps": done}


def train_child(contender: str, steps: int, threads: int) -> None:
    """One training measurement, printed as a JSON line (run in its own process)."""
    sampler = _RssSampler()
    started = time.perf_counter()
    if contender.startswith("ours"):
        record = _train_ours(steps, threads)
    else:
        record = _train_hf(steps, threads, bf16=contender == "hf-bf16")
    samples = sampler.stop()
    every = max(len(samples) // 20, 1)
    print(json.dumps({
        "contender": contender, **record, "seconds": time.perf_counter() - started,
        "peak_rss_mb": (_status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024,
        "final_rss_mb": (_status_kb("VmRSS") or 0) / 1024,
        "rss_mb_every_s": [[round(s), round(mb)] for s, mb in samples[::every]],
    }))


def train_main(args: argparse.Namespace) -> None:
    import os

    contenders = args.contenders.split(",")
    unknown = [c for c in contenders if c not in CONTENDERS]
    if unknown:
        raise SystemExit(f"unknown contenders {unknown}; choose from {','.join(CONTENDERS)}")
    print(f"machine: {machine()}; available memory {available_mb():.0f} MB; {TRAIN_CONFIG.name}, {args.steps} "
          f"updates each, {args.threads} threads")
    print(f"{'contender':20s} {'peak MB':>8s} {'set-up MB':>9s} {'final MB':>8s} {'seconds':>8s}")
    peaks, details = {}, {}
    for contender in contenders:
        env = dict(os.environ)
        for name in DEFAULT_CACHES:
            env.pop(name, None)  # each contender gets its own settings, not the caller's
        if contender == "ours-default-caches":
            env.update(DEFAULT_CACHES)
        command = [sys.executable, __file__, "--train-child", contender, "--steps", str(args.steps),
                   "--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
        if done.returncode != 0:
            print(f"{contender} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
            continue
        record = json.loads(done.stdout.strip().splitlines()[-1])
        peaks[contender] = round(record["peak_rss_mb"])
        details[contender] = record
        print(f"{contender:20s} {record['peak_rss_mb']:8.0f} {record['setup_rss_mb']:9.0f} "
              f"{record['final_rss_mb']:8.0f} {record['seconds']:8.0f}", flush=True)
        print(f"  RSS (s, MB): {record['rss_mb_every_s']}", flush=True)
    emit_json({
        "train_peak_rss_mb": peaks,
        "train_setup_rss_mb": {c: round(r["setup_rss_mb"]) for c, r in details.items()},
        "train_final_rss_mb": {c: round(r["final_rss_mb"]) for c, r in details.items()},
        "ours_vs_hf_fp32_peak": round(peaks["ours"] / peaks["hf-fp32"], 2) if {"ours", "hf-fp32"} <= peaks.keys()
        else None,
        "steps": args.steps, "threads": args.threads, "load_avg_end": machine()["load_avg"],
    })


def _malloc_stats() -> dict:
    """glibc's mallinfo2 (bytes in use, free bytes kept in its heaps) and arena count; {} without glibc."""
    import ctypes
    import ctypes.util
    import tempfile

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fields = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                  "keepcost")

        class MallInfo2(ctypes.Structure):
            _fields_ = [(name, ctypes.c_size_t) for name in fields]

        libc.mallinfo2.restype = MallInfo2
        info = libc.mallinfo2()
        libc.fopen.restype, libc.fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
        libc.fclose.argtypes, libc.malloc_info.argtypes = [ctypes.c_void_p], [ctypes.c_int, ctypes.c_void_p]
        with tempfile.NamedTemporaryFile(suffix=".xml") as xml:
            handle = libc.fopen(xml.name.encode(), b"w")
            libc.malloc_info(0, handle)
            libc.fclose(handle)
            arenas = Path(xml.name).read_text().count("<heap nr=")
    except (OSError, AttributeError):
        return {}
    return {"in_use_mb": info.uordblks / MB, "free_in_heaps_mb": info.fordblks / MB, "arenas": arenas}


def probe_main(args: argparse.Namespace) -> None:
    """Phase by phase: where one training run's memory goes (see the module docstring, --probe)."""
    import tempfile

    started = time.perf_counter()
    records = []

    def report(phase: str) -> None:
        record = {"phase": phase, "seconds": round(time.perf_counter() - started, 1),
                  "cpu_s": round(time.process_time(), 1), "rss_mb": round((_status_kb("VmRSS") or 0) / 1024),
                  "peak_mb": round((_status_kb("VmHWM") or 0) / 1024),
                  **{k: round(v) for k, v in _malloc_stats().items()}}
        records.append(record)
        print(" ".join(f"{k}={v}" for k, v in record.items()), flush=True)

    report("start")
    import torch  # noqa: F401

    from transformer.training.trainer import Trainer

    report("imports")
    config = _train_config(args.steps, args.threads, args.eval_every)
    originals = {name: getattr(Trainer, name) for name in ("_update", "_validate", "_evaluate_and_save")}

    def logged_update(self, group):
        loss = originals["_update"](self, group)
        if self.state.step % 10 == 9 or self.state.step < 3:  # the caller counts this update after the call
            report(f"update {self.state.step + 1}")
        return loss

    def logged_validate(self, figures):
        result = originals["_validate"](self, figures)
        report(f"validated (loss, greedy BLEU) at update {self.state.step}")
        return result

    def logged_evaluate(self):
        originals["_evaluate_and_save"](self)
        report("checkpoint saved, free memory released")

    Trainer._update, Trainer._validate, Trainer._evaluate_and_save = logged_update, logged_validate, logged_evaluate
    try:
        with tempfile.TemporaryDirectory() as out:
            trainer = Trainer(config, out, progress_bar=False)
            report("trainer built (corpus, BPE, model, optimizer)")
            trainer.train()
    finally:
        for name, method in originals.items():
            setattr(Trainer, name, method)
    emit_json({"probe": records, "steps": args.steps, "eval_every": args.eval_every, "threads": args.threads})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100, help="updates per contender (default 100)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated")
    parser.add_argument("--probe", action="store_true", help="one training run, memory phase by phase")
    parser.add_argument("--eval-every", type=int, default=30, help="--probe: validation every N updates")
    parser.add_argument("--train-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_child:
        train_child(args.train_child, args.steps, args.threads)
    elif args.probe:
        probe_main(args)
    else:
        train_main(args)


if __name__ == "__main__":
    main()
