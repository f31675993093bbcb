"""`transformer serve` under load: latency and throughput with dynamic batching, and without it.

usage: python bench/serve.py [--model runs/c-en] [--clients 20] [--seconds 30] [--texts FILE] [--limit 100]
                             [--beam N] [--max-batch 32] [--batch-wait-ms 5]

For each setting (--max-batch N with --batch-wait-ms, then --max-batch 1: no batching) it starts `transformer
serve` as a subprocess on a free loopback port, sends a few warm-up requests, then runs --clients concurrent
clients (asyncio, httpx over real HTTP) for --seconds, each posting one text at a time to /api/translate and
waiting for the answer. Every answer is checked against offline `translate` of the same text with the same
beam (run here, before the servers start): an error is a non-200 answer or a failed request, a wrong answer a
translation that differs. Texts: the lines of --texts, else the sources of the model's test split (the first
--limit). Reported per setting: requests, p50 and p95 latency, requests/s, mean batch size (from /api/stats),
errors and wrong answers; then the gain in requests/s of batching. A markdown table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit_json, machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "runs" / "c-en"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help=f"translation model directory (default: {DEFAULT_MODEL.relative_to(ROOT)})")
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients (default: 20)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time per setting (default: 30)")
    parser.add_argument("--texts", type=Path, help="file of texts, one a line (default: the model's test split)")
    parser.add_argument("--limit", type=int, default=100, help="use the first N texts (default: 100)")
    parser.add_argument("--beam", type=int, help="beam of every request (default: the model's decode.beam)")
    parser.add_argument("--max-batch", type=int, default=32, help="the batching server's --max-batch (default: 32)")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="its --batch-wait-ms (default: 5)")
    parser.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for a server to load")
    return parser.parse_args()


def load_texts(args: argparse.Namespace) -> list[str]:
    if args.texts:
        lines = args.texts.read_text(encoding="utf-8").splitlines()
    else:
        from transformer.data.datasets import load_split
        from transformer.model_dir import read_config

        corpus = load_split(read_config(args.model).data, "test")
        if corpus is None:
            raise SystemExit(f"{args.model}'s data config names no test split: pass --texts FILE")
        lines = list(corpus.src)
    texts = [line for line in lines if line.strip()][: args.limit]
    if not texts:
        raise SystemExit("no texts to send: --texts names an empty file")
    return texts


def offline_translations(model_dir: Path, texts: list[str], beam: int | None) -> tuple[dict[str, str], int]:
    """The reference: offline translate of every text; and the beam used."""
    import transformer

    bundle = transformer.load(model_dir)
    beam = beam or bundle.config.decode.beam
    return dict(zip(texts, bundle.translate(texts, beam=beam), strict=True)), beam


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, port: int, max_batch: int, wait_ms: float, timeout: float) -> subprocess.Popen:
    command = [sys.executable, "-m", "transformer", "serve", "--model", str(model_dir), "--port", str(port),
               "--max-batch", str(max_batch), "--batch-wait-ms", str(wait_ms), "--max-queue", "100000"]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"`{' '.join(command)}` exited with status {server.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.terminate()
    raise SystemExit(f"the server did not answer within {timeout:g} s (--startup-timeout)")


async def run_clients(url: str, texts: list[str], expected: dict[str, str], beam: int, clients: int,
                      seconds: float) -> dict:
    latencies: list[float] = []
    counts = {"errors": 0, "wrong": 0}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client_loop(client: httpx.AsyncClient, first: int, stop_at: float) -> None:
        i = first
        while time.monotonic() < stop_at:
            text = texts[i % len(texts)]
            i += clients
            started = time.perf_counter()
            try:
                response = await client.post(f"{url}/api/translate", json={"text": text, "beam": beam})
            except httpx.HTTPError:
                counts["errors"] += 1
                continue
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                counts["errors"] += 1
            elif response.json()["translation"] != expected[text]:
                counts["wrong"] += 1

    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        for text in texts[: min(len(texts), 4)]:  # warm-up, not measured
            await client.post(f"{url}/api/translate", json={"text": text, "beam": beam})
        before = (await client.get(f"{url}/api/stats")).json()
        started = time.perf_counter()
        stop_at = time.monotonic() + seconds
        await asyncio.gather(*(client_loop(client, i, stop_at) for i in range(clients)))
        elapsed = time.perf_counter() - started
        after = (await client.get(f"{url}/api/stats")).json()
    batches = after["batches"] - before["batches"]
    return {"requests": len(latencies), "p50_ms": _percentile(latencies, 50), "p95_ms": _percentile(latencies, 95),
            "requests_per_s": round(len(latencies) / elapsed, 2),
            "mean_batch": round((after["requests"] - before["requests"]) / batches, 2) if batches else 0.0,
            **counts}


def _percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return round(1000 * values[0], 1) if values else float("nan")
    return round(1000 * statistics.quantiles(values, n=100)[q - 1], 1)


def measure(args: argparse.Namespace, texts: list[str], expected: dict[str, str], beam: int, max_batch: int) -> dict:
    port = free_port()
    server = start_server(args.model, port, max_batch, args.batch_wait_ms, args.startup_timeout)
    try:
        result = asyncio.run(run_clients(f"http://127.0.0.1:{port}", texts, expected, beam, args.clients,
                                         args.seconds))
    finally:
        server.terminate()
        server.wait(30)
    return {"max_batch": max_batch, **result}


def main() -> None:
    args = parse_args()
    if not (args.model / "config.yaml").is_file():
        raise SystemExit(f"{args.model} is not a model directory: pass --model DIR (a translation model)")
    texts = load_texts(args)
    expected, beam = offline_translations(args.model, texts, args.beam)
    rows = [measure(args, texts, expected, beam, max_batch) for max_batch in (args.max_batch, 1)]
    gain = rows[0]["requests_per_s"] / rows[1]["requests_per_s"] if rows[1]["requests_per_s"] else float("nan")
    print(f"\n`transformer serve --model {args.model}`: {args.clients} clients, {args.seconds:g} s each, beam {beam}, "
          f"{len(texts)} texts, --batch-wait-ms {args.batch_wait_ms:g}\n")
    print("| --max-batch | requests | p50 ms | p95 ms | requests/s | mean batch | errors | wrong |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['max_batch']} | {r['requests']} | {r['p50_ms']} | {r['p95_ms']} | {r['requests_per_s']} | "
              f"{r['mean_batch']} | {r['errors']} | {r['wrong']} |")
    print(f"\nbatching gain: {gain:.2f}x requests/s\n")
    emit_json({"bench": "serve", "model": str(args.model), "clients": args.clients, "seconds": args.seconds,
               "beam": beam, "texts": len(texts), "batch_wait_ms": args.batch_wait_ms, "results": rows,
               "gain": round(gain, 2), "machine": machine()})


if __name__ == "__main__":
    main()
