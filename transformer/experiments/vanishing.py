"""vanishing-gradients: how much does the loss at the end of a sequence depend on an input t steps earlier?

For a freshly initialized RNN (tanh), LSTM and Transformer of equal parameter count reading a recall sequence,
the loss at the last position is differentiated with respect to each input embedding; the norm of that gradient
is averaged over a batch and over seeds, by distance t from the end. Through a recurrence the gradient is a
product of t Jacobians, so it should shrink geometrically in an RNN, less in an LSTM (its additive cell path),
and not at all with distance in a Transformer, where every position is one attention step from the last.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from transformer.experiments.base import Context, Experiment, Outcome, spread
from transformer.experiments.data import recall_batch
from transformer.experiments.sequence_models import n_parameters, recall_model, recall_widths

MODELS = ("RNN", "LSTM", "Transformer")


def distances(length: int) -> list[int]:
    return [0] + [2 ** i for i in range(int(math.log2(length - 1)) + 1)]


def _gradient_norms(name: str, width: int, length: int, seed: int, batch: int) -> dict:
    torch.manual_seed(seed)
    model = recall_model(name, width)
    ids, keys = recall_batch(length, batch, torch.Generator().manual_seed(seed + 100))
    embedded = model.embedding(ids) if hasattr(model, "embedding") else model.tokens(ids)  # (B, T, D)
    embedded = embedded.detach().requires_grad_(True)
    F.cross_entropy(model.forward_embedded(embedded), keys).backward()
    norms = embedded.grad.norm(dim=-1).mean(dim=0)  # (T,): by position
    by_distance = norms.flip(0)  # index t: t steps before the last position
    return {"norms": [float(by_distance[t]) for t in distances(length)], "parameters": n_parameters(model)}


class VanishingGradients(Experiment):
    name, title = "vanishing-gradients", "Vanishing gradients: RNN, LSTM and Transformer"
    claim = ("RNNs suffer vanishing gradients and forget over long spans; LSTMs fix part of that but "
             '"struggle with even longer dependencies".')

    def run(self, ctx: Context) -> Outcome:
        length, seeds, batch = ctx.pick(33, 257), ctx.pick(2, 5), ctx.pick(8, 32)
        sizes = recall_widths(MODELS)
        at = distances(length)
        records = {n: [ctx.part(f"{n}-L{length}-seed{s}", lambda n=n, s=s: _gradient_norms(n, sizes[n], length, s,
                                                                                             batch))
                       for s in range(seeds)] for n in MODELS}
        rows, series = [], {}
        for i, t in enumerate(at):
            row: list = [t]
            for n in MODELS:
                values = [r["norms"][i] for r in records[n]]
                if min(values) == 0.0:
                    row.append("0 (float32 underflow)" if max(values) == 0.0 else "0 in some seeds")
                    continue
                mean, sd = spread([math.log10(v) for v in values])
                row.append(f"{10 ** mean:.2e} (×10^±{sd:.2f})")
            rows.append(row)
        for n in MODELS:  # log10 means over seeds; NaN where a seed's gradient underflowed to 0
            logs = [[math.log10(r["norms"][i]) if r["norms"][i] > 0 else math.nan for r in records[n]]
                    for i in range(len(at))]
            series[n] = ([spread(v)[0] for v in logs], [spread(v)[1] for v in logs])
        ratio = {n: _decay(at, series[n][0]) for n in MODELS}
        reading = (
            f"Gradient norm of the last position's loss with respect to the input t steps earlier, at "
            f"initialization, geometric mean over {seeds} seeds of a batch of {batch} recall sequences of length "
            f"{length}, the models at about {records['Transformer'][0]['parameters']:,} parameters each "
            f"(widths {', '.join(f'{n} {sizes[n]}' for n in MODELS)}). From t = 1 to the farthest distance "
            "where it is not 0 in float32, the gradient "
            + ", ".join(f"of the {n} changes by a factor 10^{ratio[n][0]:.1f} (t = {ratio[n][1]})" for n in MODELS)
            + ". " + _verdict({n: r[0] for n, r in ratio.items()}, {n: r[2] for n, r in ratio.items()}))
        columns = ["distance t", *[f"{n} ‖∂L/∂x_t‖" for n in MODELS]]
        return Outcome(columns, rows, reading, {"distances": at, "log10_mean_sd": series, "widths": sizes})

    def plot(self, outcome: Outcome, path: Path) -> None:
        from transformer.experiments.plots import line_plot

        at = outcome.details["distances"]
        series = {n: ([10 ** m for m in ms], None) for n, (ms, _) in outcome.details["log10_mean_sd"].items()}
        line_plot(path, [max(t, 0.5) for t in at], series, "distance t from the last position (0 plotted at 0.5)",
                  "‖∂ loss / ∂ x_t‖ (geometric mean over seeds)", "Vanishing gradients at initialization",
                  logx=True, logy=True)


def _decay(at: list[int], log_means: list[float]) -> tuple[float, int, int | None]:
    """(log10 of the gradient at the farthest distance with a finite value over that at t = 1, that distance,
    the first distance where it underflows to 0 or None). t = 0 is left out: the last input reaches the loss
    directly, without the recurrence or an attention step."""
    finite = [i for i in range(1, len(at)) if log_means[i] == log_means[i]]
    underflow = next((at[i] for i in range(1, len(at)) if log_means[i] != log_means[i]), None)
    far = finite[-1]
    return log_means[far] - log_means[1], at[far], underflow


def _verdict(ratio: dict[str, float], underflow: dict[str, int | None]) -> str:
    rnn, lstm, transformer = ratio["RNN"], ratio["LSTM"], ratio["Transformer"]
    parts = [("The RNN's gradient vanishes, as claimed" if rnn < -3 or underflow["RNN"]
              else "The RNN's gradient does not vanish here, against the claim")
             + (f" (0 in float32 from t = {underflow['RNN']})" if underflow["RNN"] else "")]
    if underflow["LSTM"] and (underflow["RNN"] is None or underflow["LSTM"] > underflow["RNN"]):
        parts.append(f"the LSTM's lasts longer (0 from t = {underflow['LSTM']}) but vanishes too: it fixes part "
                     "of it, as claimed")
    elif not underflow["LSTM"] and lstm > rnn:
        parts.append("the LSTM's falls more slowly: it fixes part of it, as claimed")
    else:
        parts.append("the LSTM's falls as fast, against the claim")
    flat = "stays within a factor 10" if abs(transformer) < 1 else "changes by more than a factor 10"
    parts.append(f"the Transformer's {flat} from t = 1 on" + (" (0 somewhere)" if underflow["Transformer"] else ""))
    return "; ".join(parts) + "."
