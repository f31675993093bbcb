"""positions: do fixed sinusoidal encodings extrapolate to sequences longer than any seen in training?

Two byte-level language models of the English Bible (byte_lm.py), identical but for their positions (the
paper's sinusoids, or a learned table of TEST_LENGTH rows), train on windows of TRAIN_LENGTH bytes and are scored
on held-out (test-book) windows of up to TEST_LENGTH bytes: the loss at each position, by bucket. Within the
training length the two should match (the paper's Table 3, row E); beyond it, the claim is that the sinusoids
keep working while the learned rows past TRAIN_LENGTH, never trained, do not.
"""

from __future__ import annotations

from pathlib import Path

from transformer.experiments.base import Context, Experiment, Outcome, mean_sd, spread
from transformer.experiments.byte_lm import build_byte_lm, position_losses, train_byte_lm
from transformer.experiments.data import bible_bytes

KINDS = ("sinusoidal", "learned")


def buckets(train_length: int, test_length: int) -> list[tuple[int, int]]:
    """[0, L), [L, 2L), [2L, 4L), ... up to the test length (L the training length)."""
    edges = [0, train_length]
    while edges[-1] < test_length:
        edges.append(min(2 * edges[-1], test_length))
    return list(zip(edges[:-1], edges[1:], strict=True))


def _run(kind: str, seed: int, train_length: int, test_length: int, seconds: float, max_steps: int,
         windows: int, verses: int | None) -> dict:
    model = build_byte_lm(seed, positional=kind, max_positions=test_length)
    trained = train_byte_lm(model, bible_bytes("train", verses), length=train_length, seconds=seconds,
                            max_steps=max_steps, lr=1e-3, seed=seed)
    losses = position_losses(model, bible_bytes("test", verses), test_length, windows)
    return {**trained, "bucket_loss": [float(losses[a:b].mean()) for a, b in buckets(train_length, test_length)]}


class Positions(Experiment):
    name, title = "positions", "Positions: sinusoidal against learned, beyond the training length"
    claim = 'Fixed positional encodings "allow extrapolating to longer sequences".'

    def run(self, ctx: Context) -> Outcome:
        train_length, test_length = ctx.pick(16, 64), ctx.pick(64, 512)
        seconds, max_steps = ctx.pick(1.0, 150.0), ctx.pick(3, 100_000)
        windows, seeds, verses = ctx.pick(4, 64), ctx.pick(1, 2), ctx.pick(200, None)
        records = {k: [ctx.part(f"{k}-seed{s}", lambda k=k, s=s: _run(k, s, train_length, test_length, seconds,
                                                                       max_steps, windows, verses))
                       for s in range(seeds)] for k in KINDS}
        spans = buckets(train_length, test_length)
        rows = []
        for i, (a, b) in enumerate(spans):
            rows.append([f"{a}–{b - 1}" + (" (trained)" if b <= train_length else ""),
                         *[mean_sd([r["bucket_loss"][i] for r in records[k]]) for k in KINDS]])
        means = {k: [spread([r["bucket_loss"][i] for r in records[k]])[0] for i in range(len(spans))] for k in KINDS}
        sds = {k: [spread([r["bucket_loss"][i] for r in records[k]])[1] for i in range(len(spans))] for k in KINDS}
        steps = {k: sum(r["steps"] for r in records[k]) // seeds for k in KINDS}
        reading = (
            f"Byte-level language models of the English Bible (2 pre-LN layers, d_model 128), trained {seconds:g} s "
            f"each on {train_length}-byte windows ({', '.join(f'{k}: {steps[k]} updates' for k in KINDS)}, mean "
            f"over {seeds} seed(s)), scored in nats per byte on {windows} test-book windows of {test_length} bytes. "
            + _verdict(means, spans, train_length))
        columns = ["positions", *[f"{k} loss (nats/byte)" for k in KINDS]]
        details = {"buckets": spans, "mean": means, "sd": sds, "train_length": train_length,
                   "test_length": test_length, "steps": steps}
        return Outcome(columns, rows, reading, details)

    def plot(self, outcome: Outcome, path: Path) -> None:
        from transformer.experiments.plots import line_plot

        d = outcome.details
        centres = [(a + b) / 2 for a, b in d["buckets"]]
        line_plot(path, centres, {k: (d["mean"][k], d["sd"][k]) for k in KINDS},
                  f"position in the window (trained up to {d['train_length']})", "test loss (nats/byte)",
                  "Extrapolating past the training length", logx=True)


def _verdict(means: dict[str, list[float]], spans: list[tuple[int, int]], train_length: int) -> str:
    inside = {k: means[k][0] for k in KINDS}
    far = {k: means[k][-1] for k in KINDS}
    text = (f"Within the training length the losses are {inside['sinusoidal']:.3f} (sinusoidal) and "
            f"{inside['learned']:.3f} (learned); at positions {spans[-1][0]}–{spans[-1][1] - 1} they are "
            f"{far['sinusoidal']:.3f} and {far['learned']:.3f}. ")
    grew = {k: far[k] - inside[k] for k in KINDS}
    if grew["sinusoidal"] < 0.1:
        text += "The sinusoids extrapolate here: their loss past the training length stays within 0.1 nats. "
    else:
        text += (f"The sinusoids do not extrapolate well: their loss rises by {grew['sinusoidal']:.2f} nats past "
                 "the training length. ")
    gap = grew["learned"] - grew["sinusoidal"]
    if abs(gap) < 0.1:
        text += (f"The learned table's loss rises by {grew['learned']:.2f} nats, within 0.1 of the sinusoids': on "
                 "this data the fixed encoding extrapolates no better than the learned one, whose rows past the "
                 "training length were never trained.")
    else:
        text += (f"The learned table's loss rises by {grew['learned']:.2f} nats, "
                 + ("more than the sinusoids': the fixed encoding extrapolates better." if gap > 0
                    else "less than the sinusoids'."))
    return text
