"""activations: ReLU, Leaky ReLU and GELU in the feed-forward layers: dead units over training, and final loss.

Byte-level language models of the English Bible (byte_lm.py) identical but for the feed-forward activation
train with a high learning rate (where dead units appear), several seeds each. A hidden unit of a feed-forward
layer is counted dead when its pre-activation is <= 0 for every byte of a fixed probe batch of held-out text:
such a ReLU unit outputs 0 and its own weights get no gradient (it revives only if the layers below move its
inputs); a Leaky ReLU unit still passes 1% of the gradient, and a GELU unit a small, smooth one. The same
definition is applied to all three, so the counts compare units on the flat side of their activation for all
inputs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from transformer.experiments.base import Context, Experiment, Outcome, mean_sd, spread
from transformer.experiments.byte_lm import build_byte_lm, position_losses, train_byte_lm
from transformer.experiments.data import bible_bytes, byte_windows
from transformer.models.decoder_only import DecoderOnly

ACTIVATIONS = {"ReLU": "relu", "Leaky ReLU": "leaky_relu", "GELU": "gelu"}
LEARNING_RATE = 3e-3


@torch.no_grad()
def dead_fraction(model: DecoderOnly, probe: torch.Tensor) -> float:
    """The fraction of feed-forward hidden units (all layers) whose pre-activation is <= 0 on every position of
    `probe` (B, T)."""
    pre: list[torch.Tensor] = []
    hooks = [layer.ff.fc1.register_forward_hook(lambda _m, _i, out: pre.append(out.detach()))
             for layer in model.stack.layers]
    was_training = model.training
    model.eval()
    try:
        model.hidden_states(probe)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    dead = [(p.reshape(-1, p.size(-1)) <= 0).all(dim=0) for p in pre]  # each (d_ff,)
    return float(torch.cat(dead).float().mean())


def _run(activation: str, seed: int, seconds: float, max_steps: int, every: int, verses: int | None) -> dict:
    model = build_byte_lm(seed, activation=activation, max_positions=64)
    probe, _ = byte_windows(bible_bytes("valid", verses), 64, 16, torch.Generator().manual_seed(7))  # (16, 64)
    curve: list[tuple[int, float]] = []
    trained = train_byte_lm(model, bible_bytes("train", verses), length=64, seconds=seconds, max_steps=max_steps,
                            lr=LEARNING_RATE, seed=seed, every=every,
                            probe=lambda step: curve.append((step, dead_fraction(model, probe))))
    test_loss = float(position_losses(model, bible_bytes("test", verses), 64, 32).mean())
    return {**trained, "dead_curve": curve, "test_loss": test_loss}


class Activations(Experiment):
    name, title = "activations", "Activations: dead units of ReLU, Leaky ReLU and GELU"
    claim = "ReLU has dead neurons and GELU fixes its discontinuous gradient."

    def run(self, ctx: Context) -> Outcome:
        seconds, max_steps = ctx.pick(1.0, 60.0), ctx.pick(3, 100_000)
        seeds, every, verses = ctx.pick(1, 3), ctx.pick(1, 25), ctx.pick(200, None)
        records = {name: [ctx.part(f"{act}-seed{s}", lambda act=act, s=s: _run(act, s, seconds, max_steps, every,
                                                                               verses))
                          for s in range(seeds)] for name, act in ACTIVATIONS.items()}
        rows = []
        for name, runs in records.items():
            rows.append([name, mean_sd([100 * r["dead_curve"][-1][1] for r in runs], 2),
                         mean_sd([100 * max(f for _, f in r["dead_curve"]) for r in runs], 2),
                         mean_sd([r["test_loss"] for r in runs]), sum(r["steps"] for r in runs) // len(runs)])
        final = {name: spread([r["test_loss"] for r in runs]) for name, runs in records.items()}
        dead = {name: spread([100 * r["dead_curve"][-1][1] for r in runs])[0] for name, runs in records.items()}
        dead_sd = {name: spread([100 * r["dead_curve"][-1][1] for r in runs])[1] for name, runs in records.items()}
        best = min(final, key=lambda n: final[n][0])
        peak = {name: spread([100 * max(f for _, f in r["dead_curve"]) for r in runs])[0]
                for name, runs in records.items()}
        reading = (
            f"Byte-level language models of the English Bible (2 pre-LN layers, d_model 128, d_ff 512), Adam at a "
            f"high learning rate ({LEARNING_RATE:g}) for {seconds:g} s, {seeds} seed(s) each; dead units counted on "
            f"16 held-out windows of 64 bytes every {every} updates. At the end, "
            + ", ".join(f"{n} has {dead[n]:.2f}% dead units" for n in records)
            + f"; the lowest test loss is {best}'s ({final[best][0]:.3f} nats/byte). During training the dead share "
            + "peaked at " + ", ".join(f"{peak[n]:.2f}% ({n})" for n in records)
            + " and fell back: units dead on the probe revive as the layers below move their inputs. "
            + _verdict(dead, dead_sd, final))
        columns = ["activation", "dead units at the end (%)", "most dead units during training (%)",
                   "test loss (nats/byte)", "updates"]
        curves = {name: [r["dead_curve"] for r in runs] for name, runs in records.items()}
        return Outcome(columns, rows, reading, {"curves": curves, "learning_rate": LEARNING_RATE})

    def plot(self, outcome: Outcome, path: Path) -> None:
        from transformer.experiments.plots import line_plot

        curves = outcome.details["curves"]
        steps = [s for s, _ in min((run for runs in curves.values() for run in runs), key=len)]  # shared by all
        series = {}
        for name, runs in curves.items():
            values = [[100 * run[i][1] for run in runs] for i in range(len(steps))]
            series[name] = ([spread(v)[0] for v in values], [spread(v)[1] for v in values])
        line_plot(path, steps, series, "update", "dead feed-forward units (%)",
                  "Dead units over training (mean ± sd over seeds)")


def _verdict(dead: dict[str, float], dead_sd: dict[str, float], final: dict[str, tuple[float, float]]) -> str:
    relu, leaky, gelu = dead["ReLU"], dead["Leaky ReLU"], dead["GELU"]
    if relu <= gelu:
        text = "ReLU does not end with more dead units than GELU here, against the claim"
    elif relu - gelu < max(dead_sd["ReLU"], dead_sd["GELU"]):
        text = ("ReLU ends with slightly more dead units than GELU, within one standard deviation across seeds: the "
                "claim holds only weakly here")
    else:
        text = "ReLU ends with more dead units than GELU, as claimed"
    text += f" (Leaky ReLU: {leaky:.2f}%). "
    gap = final["ReLU"][0] - final["GELU"][0]
    noise = max(final["ReLU"][1], final["GELU"][1])
    if abs(gap) <= noise:
        text += (f"The test losses of ReLU and GELU differ by {gap:+.3f} nats/byte, within one standard deviation "
                 f"across seeds ({noise:.3f}): no difference in quality is shown.")
    else:
        text += (f"GELU's test loss is {abs(gap):.3f} nats/byte {'lower' if gap > 0 else 'higher'} than ReLU's (seed "
                 f"spread {noise:.3f}).")
    return text
