"""`transformer prepare` on corpora larger than memory: peak memory and time, then how soon training starts.

usage: python bench/prepare.py [--pairs 1000000,5000000] [--baseline] [--workdir DIR] [--keep] [--vocab-size 8000]

For each N of --pairs: a synthetic German -> English corpus of N pairs (the Bible's train verses, exported with
`transformer data export bible --src e --tgt 2`, repeated until N lines; its valid and test splits as they are)
is written to files, `transformer prepare` tokenizes it into a cache in a subprocess (BPE of --vocab-size
trained on all N pairs, streamed; configs/bible-de-en-demo.yaml's data section otherwise), and then
`transformer train ... --set data.corpus=prepared` runs on the cache until its first update is logged
(log_every 1; the process is then stopped). Reported per N: prepare's wall time and peak resident memory
(ru_maxrss of that process alone, from wait4), the cache's size, and the seconds from starting `transformer
train` to its first logged update, with that process's peak memory (VmHWM) by then. Goal (issue #15): peak
memory under 2 GiB and flat from 1M to 5M pairs, training under way in seconds. --baseline also times
`transformer train` on the text itself (no cache) for comparison. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit_json, machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "bible-de-en-demo.yaml"
CLI = [sys.executable, "-m", "transformer"]


def synthetic_corpus(bible: Path, out: Path, n_pairs: int) -> Path:
    """train.src/.tgt of `n_pairs` lines: the Bible's train verses over and over; valid and test copied."""
    out.mkdir(parents=True, exist_ok=True)
    for side in ("src", "tgt"):
        block = (bible / f"train.{side}").read_text(encoding="utf-8")
        lines = block.count("\n")
        with (out / f"train.{side}").open("w", encoding="utf-8") as f:
            for _ in range(n_pairs // lines):
                f.write(block)
            f.write("".join(block.splitlines(keepends=True)[: n_pairs % lines]))
        for split in ("valid", "test"):
            shutil.copy(bible / f"{split}.{side}", out / f"{split}.{side}")
    return out


def data_overrides(corpus: Path, vocab_size: int) -> list[str]:
    files = [f"data.{split}_{side}={corpus / f'{split}.{side}'}" for split in ("train", "valid", "test")
             for side in ("src", "tgt")]
    return [arg for value in ["data.corpus=files", f"data.vocab_size={vocab_size}", *files] for arg in ("--set", value)]


def measured(command: list[str], log: Path) -> tuple[int, float, float]:
    """Run `command` (output to `log`); return its exit status, wall seconds and peak resident MB (its own)."""
    started = time.perf_counter()
    with log.open("w") as f:
        process = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, time.perf_counter() - started, usage.ru_maxrss / 1024


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def training_start(corpus: Path, cache: Path | None, run: Path, vocab_size: int, timeout: float) -> tuple[float, float]:
    """Seconds from `transformer train` on the cache (None: on the text) to its first logged update, and its peak MB
    by then."""
    sets = [*data_overrides(corpus, vocab_size), "--set", "train.log_every=1", "--set", "train.max_steps=20",
            "--set", "train.eval_every=1000"]
    if cache is not None:
        sets += ["--set", "data.corpus=prepared", "--set", f"data.prepared={cache}"]
    metrics = run / "metrics.jsonl"
    started = time.perf_counter()
    with (run.parent / f"{run.name}.log").open("w") as log:
        process = subprocess.Popen([*CLI, "train", str(CONFIG), "--out", str(run), "--no-progress", *sets],
                                   stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            while time.perf_counter() - started < timeout and process.poll() is None:
                if metrics.is_file() and '"loss"' in metrics.read_text():
                    seconds = time.perf_counter() - started
                    return seconds, _vm_hwm_mb(process.pid)
                time.sleep(0.05)
            raise RuntimeError(f"no update logged within {timeout:g} s (exit {process.poll()}); see {log.name}")
        finally:
            if process.poll() is None:
                process.terminate()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default="1000000,5000000", help="corpus sizes, comma-separated")
    parser.add_argument("--vocab-size", type=int, default=8000, help="BPE vocabulary (default 8000)")
    parser.add_argument("--workdir", type=Path, help="where the corpora and caches go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the corpora and caches")
    parser.add_argument("--train-timeout", type=float, default=600, help="seconds to wait for the first update")
    parser.add_argument("--baseline", action="store_true",
                        help="also time the first update of `transformer train` on the text itself (the BPE trained "
                             "and every pair encoded in the process, as without a cache), and its peak memory")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        bible = work / "bible"
        subprocess.run([*CLI, "data", "export", "bible", "--src", "e", "--tgt", "2", "--out", str(bible)],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        rows = []
        for n in (int(x) for x in args.pairs.split(",")):
            corpus = synthetic_corpus(bible, work / f"corpus-{n}", n)
            cache = work / f"cache-{n}"
            command = [*CLI, "prepare", str(CONFIG), "--out", str(cache), *data_overrides(corpus, args.vocab_size)]
            rc, seconds, peak_mb = measured(command, work / f"prepare-{n}.log")
            if rc:
                raise SystemExit(f"prepare of {n} pairs failed ({rc}): {(work / f'prepare-{n}.log').read_text()}")
            start_s, train_mb = training_start(corpus, cache, work / f"run-{n}", args.vocab_size, args.train_timeout)
            cache_mb = sum(p.stat().st_size for p in cache.iterdir()) / 2**20
            text_mb = sum((corpus / f"train.{side}").stat().st_size for side in ("src", "tgt")) / 2**20
            rows.append({"pairs": n, "text_mb": round(text_mb), "prepare_s": round(seconds, 1),
                         "prepare_peak_mb": round(peak_mb), "cache_mb": round(cache_mb),
                         "train_first_update_s": round(start_s, 1), "train_peak_mb_by_then": round(train_mb)})
            if args.baseline:
                text_s, text_peak = training_start(corpus, None, work / f"run-text-{n}", args.vocab_size,
                                                   args.train_timeout)
                rows[-1].update(text_first_update_s=round(text_s, 1), text_peak_mb_by_then=round(text_peak))
            if not args.keep:
                shutil.rmtree(corpus)
                shutil.rmtree(cache)
        print(f"{'pairs':>9} {'text MB':>8} {'prepare s':>10} {'peak MB':>8} {'cache MB':>9} {'1st update s':>13} "
              f"{'train MB':>9}")
        for r in rows:
            print(f"{r['pairs']:>9} {r['text_mb']:>8} {r['prepare_s']:>10} {r['prepare_peak_mb']:>8} "
                  f"{r['cache_mb']:>9} {r['train_first_update_s']:>13} {r['train_peak_mb_by_then']:>9}")
        if args.baseline:
            print("on the text, without a cache: " + ", ".join(
                f"{r['pairs']} pairs: first update after {r['text_first_update_s']} s, {r['text_peak_mb_by_then']} MB"
                for r in rows))
        emit_json({"bench": "prepare", "vocab_size": args.vocab_size, "rows": rows, "machine": machine()})
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
