"""parallel: training time per step against sequence length, for an LSTM and a Transformer of equal size.

An LSTM must compute its N states one after another; a Transformer layer computes all N positions at once, but
its attention compares every pair: N^2 work. One training step (forward, backward, Adam) on a batch of
BATCH random sequences of length N is timed for each, several times after a warm-up; the median is reported.
On a CPU with two cores there is little parallel hardware for the Transformer to use, so the comparison is of
the work and of how well each maps onto the matrix kernels, not of a GPU's parallelism.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from transformer.experiments.base import Context, Experiment, Outcome
from transformer.experiments.sequence_models import (
    RecurrentClassifier,
    TransformerClassifier,
    matched_width,
    n_parameters,
)

VOCAB, CLASSES, BATCH, D_TRANSFORMER = 256, 8, 4, 256


def _build(name: str, width: int) -> torch.nn.Module:
    if name == "Transformer":
        return TransformerClassifier(VOCAB, D_TRANSFORMER, CLASSES, layers=2, heads=4, causal=False,
                                     max_positions=8192)
    return RecurrentClassifier(VOCAB, width, CLASSES, cell="lstm")


def _step_seconds(name: str, width: int, length: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = _build(name, width)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    inputs = torch.randint(0, VOCAB, (BATCH, length))
    labels = torch.randint(0, CLASSES, (BATCH,))
    times = []
    for i in range(repeats + 1):  # the first is a warm-up
        start = time.perf_counter()
        loss = F.cross_entropy(model(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i:
            times.append(time.perf_counter() - start)
    return {"median_seconds": statistics.median(times), "times": times, "parameters": n_parameters(model)}


class Parallel(Experiment):
    name, title = "parallel", "Parallel: time per training step against sequence length"
    claim = ('LSTMs "struggle with even longer dependencies" and are slow because they compute serially; the '
             "Transformer trains in parallel, but costs N².")

    def run(self, ctx: Context) -> Outcome:
        lengths = ctx.pick([16, 32], [64, 128, 256, 512, 1024, 2048, 4096])
        repeats = ctx.pick(1, 5)
        target = n_parameters(_build("Transformer", 0))
        width = matched_width(lambda d: _build("LSTM", d), target)
        names = ("LSTM", "Transformer")
        results = {n: [ctx.part(f"{n}-L{length}", lambda n=n, length=length: _step_seconds(n, width, length, repeats))
                       for length in lengths] for n in names}
        lstm = [r["median_seconds"] for r in results["LSTM"]]
        transformer = [r["median_seconds"] for r in results["Transformer"]]
        rows = [[length, f"{a * 1000:.1f}", f"{b * 1000:.1f}", f"{a / b:.2f}"]
                for length, a, b in zip(lengths, lstm, transformer, strict=True)]
        reading = (
            f"One training step (forward, backward, Adam) on {BATCH} sequences, median of {repeats} after a warm-up, "
            f"on this machine's CPU (torch threads: {torch.get_num_threads()}): an LSTM of width {width} "
            f"({results['LSTM'][0]['parameters']:,} parameters) against our Transformer encoder, 2 layers of "
            f"d_model {D_TRANSFORMER} ({results['Transformer'][0]['parameters']:,} parameters). "
            + _verdict(lengths, lstm, transformer))
        columns = ["length N", "LSTM ms/step", "Transformer ms/step", "LSTM / Transformer"]
        details = {"lengths": lengths, "lstm_seconds": lstm, "transformer_seconds": transformer, "width": width,
                   "batch": BATCH, "threads": torch.get_num_threads()}
        return Outcome(columns, rows, reading, details)

    def plot(self, outcome: Outcome, path: Path) -> None:
        from transformer.experiments.plots import line_plot

        d = outcome.details
        series = {"LSTM": ([1000 * s for s in d["lstm_seconds"]], None),
                  "Transformer": ([1000 * s for s in d["transformer_seconds"]], None)}
        line_plot(path, d["lengths"], series, "sequence length N", "ms per training step", "Training step time",
                  logx=True, logy=True)


def _exponents(lengths: list[int], seconds: list[float]) -> list[float]:
    """k of time ~ N^k between each pair of successive lengths."""
    return [math.log(b / a) / math.log(n2 / n1)
            for n1, n2, a, b in zip(lengths, lengths[1:], seconds, seconds[1:], strict=False)]


def _verdict(lengths: list[int], lstm: list[float], transformer: list[float]) -> str:
    faster = [n for n, a, b in zip(lengths, lstm, transformer, strict=True) if b < a]
    grows = _exponents(lengths, transformer)
    text = (f"Between successive lengths the Transformer's time grows as N^k with k = "
            f"{', '.join(f'{k:.2f}' for k in grows)}, the LSTM's with k = "
            f"{', '.join(f'{k:.2f}' for k in _exponents(lengths, lstm))}. ")
    quadratic = next((lengths[i] for i, k in enumerate(grows) if k >= 1.5), None)
    if not faster:
        text += "The Transformer is slower at every length measured."
    elif len(faster) == len(lengths):
        text += "The Transformer is faster at every length measured; its N² term has not overtaken it yet."
    else:
        slower = [n for n in lengths if n not in faster]
        text += (f"The Transformer is faster at N = {', '.join(map(str, faster))} and slower from N = {slower[0]} "
                 f"on (the LSTM is {lstm[-1] and transformer[-1] / lstm[-1]:.1f}x faster at N = {lengths[-1]}).")
    if quadratic is not None:
        text += (f" From N = {quadratic} its time grows faster than N^1.5: the N² attention dominates; below, its "
                 "per-position work (projections, feed-forward) does.")
    return text
