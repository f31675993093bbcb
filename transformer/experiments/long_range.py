"""long-range: recall a token after N distractors, at lengths 16 to 512.

An RNN, an LSTM, an LSTM with additive attention over its states, and a Transformer, each sized to the same
parameter count and trained for the same wall-clock time per length on fresh random sequences, are scored on
held-out sequences (experiments/data.py: chance is 1 / KEYS). The claim: recurrent models forget over long
spans; attention, which reaches every position in one step, should not.
"""

from __future__ import annotations

from pathlib import Path

import torch

from transformer.experiments.base import Context, Experiment, Outcome
from transformer.experiments.data import KEYS, recall_batch
from transformer.experiments.sequence_models import accuracy, n_parameters, recall_model, recall_widths, train_for

MODELS = ("RNN", "LSTM", "LSTM + attention", "Transformer")
LEARNING_RATE = 2e-3


def _train_and_score(name: str, width: int, length: int, seconds: float, max_steps: int, n_test: int,
                     seed: int) -> dict:
    torch.manual_seed(seed)
    model = recall_model(name, width)
    trained = train_for(model, lambda g: recall_batch(length, 32, g), seconds=seconds, max_steps=max_steps,
                        lr=LEARNING_RATE, seed=seed)
    inputs, labels = recall_batch(length, n_test, torch.Generator().manual_seed(10_000 + length))
    return {**trained, "accuracy": accuracy(model, inputs, labels), "parameters": n_parameters(model)}


class LongRange(Experiment):
    name, title = "long-range", "Long range: recall after N distractors"
    claim = "RNNs suffer vanishing gradients and forget over long spans; LSTMs fix part of that."

    def run(self, ctx: Context) -> Outcome:
        lengths = ctx.pick([8, 16], [16, 32, 64, 128, 256, 512])
        seconds, max_steps, n_test = ctx.pick(0.3, 40.0), ctx.pick(3, 100_000), ctx.pick(64, 1000)
        sizes = recall_widths(MODELS)
        results = {n: [ctx.part(f"{n.replace(' + ', '-')}-L{length}",
                                lambda n=n, length=length: _train_and_score(n, sizes[n], length, seconds, max_steps,
                                                                            n_test, ctx.seed))
                       for length in lengths] for n in MODELS}
        rows = [[length, *[f"{results[n][i]['accuracy']:.3f} ({results[n][i]['steps']} updates)" for n in MODELS]]
                for i, length in enumerate(lengths)]
        chance = 1 / KEYS
        counts = ", ".join(f"{n}: {results[n][0]['parameters']:,} parameters" for n in MODELS)
        reading = (
            f"Each model ({counts}) trained "
            f"for {seconds:g} s per length (Adam, lr {LEARNING_RATE:g}, batches of 32 fresh sequences, one seed) "
            f"and was scored on {n_test} held-out sequences; chance is {chance:.3f}. " + _verdict(results, lengths)
            + " The key is the only token of its kind in a sequence, so attention (the LSTM's or the Transformer's) "
            "can find it by content in one step at any distance; a recurrent state must carry it through every "
            "distractor.")
        columns = ["length", *[f"{n} accuracy" for n in MODELS]]
        details = {"lengths": lengths, "accuracy": {n: [r["accuracy"] for r in results[n]] for n in MODELS},
                   "steps": {n: [r["steps"] for r in results[n]] for n in MODELS}, "chance": chance,
                   "widths": sizes}
        return Outcome(columns, rows, reading, details)

    def plot(self, outcome: Outcome, path: Path) -> None:
        from transformer.experiments.plots import line_plot

        d = outcome.details
        line_plot(path, d["lengths"], {n: (a, None) for n, a in d["accuracy"].items()}, "sequence length",
                  "held-out accuracy", "Recall after N distractors, equal parameters and time", logx=True,
                  hline=(d["chance"], "chance"))


def _verdict(results: dict[str, list[dict]], lengths: list[int]) -> str:
    """Per model, the longest length it solves (accuracy >= 0.9) and the first where it is near chance."""
    chance = 1 / KEYS
    parts = []
    for name, rows in results.items():
        solved = [length for length, r in zip(lengths, rows, strict=True) if r["accuracy"] >= 0.9]
        failed = [length for length, r in zip(lengths, rows, strict=True) if r["accuracy"] < chance + 0.1]
        text = f"{name}: {'solves up to ' + str(max(solved)) if solved else 'solves no length'}"
        text += f", near chance from {min(failed)}" if failed else ", above chance everywhere"
        parts.append(text)
    return "; ".join(parts) + ". Accuracy with one seed: differences of a few points are within noise."
