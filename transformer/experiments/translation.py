"""translation and bottleneck: the LSTM encoder-decoders against the Transformer on the Bible, German to English.

translation: test BLEU of an LSTM with additive attention and of the Transformer after equal CPU minutes of
training (15 and 60; `--minutes` picks), same data, tokenizer recipe, budget and beam search.

bottleneck: the test verses grouped by source length, BLEU per group, for an LSTM without attention (the whole
source squeezed into one fixed vector), the LSTM with attention and the Transformer, after 15 CPU minutes each:
the figure of Bahdanau et al. (2015), on our data.
"""

from __future__ import annotations

from pathlib import Path

from transformer.experiments.base import Context, Experiment, Outcome
from transformer.experiments.translation_runs import LABELS, summary, trained_and_tested

BUCKETS = ((1, 10), (11, 20), (21, 30), (31, 40), (41, 50), (51, 10_000))
BOTTLENECK_MINUTES = 15


class Translation(Experiment):
    name, title = "translation", "Translation: LSTM + attention against the Transformer at equal CPU minutes"
    claim = ("LSTMs are slow because they compute serially; the Transformer trains in parallel (Bible de→en test "
             "BLEU at equal CPU minutes).")
    budgets: tuple[int, ...] = (15, 60)

    def run(self, ctx: Context) -> Outcome:
        keys = ("lstm-attention", "transformer")
        budgets = self.budgets[:1] if ctx.quick else self.budgets  # --quick: a few updates, whatever the budget
        records = {(k, m): ctx.part(f"{k}-{m}", lambda k=k, m=m: summary(trained_and_tested(ctx, k, m)))
                   for m in budgets for k in keys}
        rows = [[LABELS[k], m, records[k, m]["parameters"], records[k, m]["steps"], records[k, m]["bleu"],
                 records[k, m]["chrf"]] for m in budgets for k in keys]
        parts = []
        for m in budgets:
            a, b = records["lstm-attention", m], records["transformer", m]
            parts.append(f"after {'a few updates (--quick)' if ctx.quick else f'{m} minutes'} the Transformer reaches "
                         f"{b['bleu']:.2f} BLEU ({b['steps']} updates) and the LSTM with attention {a['bleu']:.2f} "
                         f"({a['steps']} updates)")
        reading = (
            "Both trained by the same loop on the same Bible split (Elberfelder German → King James 2000 English, "
            "held-out test books), each with its own joint BPE of the same size, for the same CPU minutes on this "
            f"2-core machine, alone; test BLEU (sacrebleu) with beam {records[keys[1], budgets[0]]['beam']}: "
            + "; ".join(parts) + ". " + _translation_verdict(records, budgets)
            + ("" if ctx.quick or set(Translation.budgets) <= set(budgets) else
               f" Not run yet: the budgets {sorted(set(Translation.budgets) - set(budgets))} minutes "
               "(`transformer experiment translation --out docs/experiments` adds them, resuming from these)."))
        columns = ["model", "CPU minutes", "parameters", "updates", "test BLEU", "chrF"]
        return Outcome(columns, rows, reading, {"budgets": list(budgets)})

    def plot(self, outcome: Outcome, path: Path) -> None:
        from transformer.experiments.plots import line_plot

        budgets = outcome.details["budgets"]
        series = {}
        for label in dict.fromkeys(r[0] for r in outcome.rows):
            series[label] = ([r[4] for r in outcome.rows if r[0] == label], None)
        line_plot(path, budgets, series, "CPU minutes of training", "test BLEU", "Bible de→en at equal CPU minutes")


def _translation_verdict(records: dict, budgets: tuple[int, ...]) -> str:
    """Who is ahead at each budget, and what that says of the claim on this machine."""
    text = []
    for m in budgets:
        gap = records["transformer", m]["bleu"] - records["lstm-attention", m]["bleu"]
        leader = "the Transformer" if gap > 0 else "the LSTM with attention"
        text.append(f"at {m} minutes {leader} is ahead by {abs(gap):.2f} BLEU")
    verdict = "; ".join(text)
    verdict = verdict[0].upper() + verdict[1:] + ". "
    if all(records["transformer", m]["bleu"] > records["lstm-attention", m]["bleu"] for m in budgets):
        return verdict + "The Transformer turns equal time into better translations, as the notes lead to expect."
    m = next(m for m in budgets if records["transformer", m]["bleu"] <= records["lstm-attention", m]["bleu"])
    lstm, transformer = records["lstm-attention", m]["steps"], records["transformer", m]["steps"]
    return verdict + (
        f"Where the LSTM is ahead, the claim's consequence does not show on this machine: in {m} minutes the two "
        f"made about as many updates ({lstm} and {transformer}), so the Transformer's parallel training bought "
        "no extra updates on 2 CPU cores, and per update the LSTM with attention learned faster.")


def bucket_of(source: str) -> int:
    words = len(source.split())
    return next(i for i, (low, high) in enumerate(BUCKETS) if low <= words <= high)


def bucket_scores(record: dict) -> list[tuple[int, float]]:
    """(verses, BLEU) of each source-length bucket of a run's test translations."""
    from transformer.evaluation.metrics import corpus_bleu

    scores = []
    for i in range(len(BUCKETS)):
        chosen = [j for j, s in enumerate(record["sources"]) if bucket_of(s) == i]
        hyps = [record["hypotheses"][j] for j in chosen]
        refs = [record["references"][j] for j in chosen]
        scores.append((len(chosen), round(corpus_bleu(hyps, refs).score, 2) if chosen else float("nan")))
    return scores


class Bottleneck(Experiment):
    name, title = "bottleneck", "Bottleneck: BLEU by source length, with and without attention"
    claim = ('The fixed context vector of seq2seq "struggles with longer inputs" until attention passes every '
             "encoder state.")

    def run(self, ctx: Context) -> Outcome:
        keys = ("lstm", "lstm-attention", "transformer")

        def scored(key: str) -> dict:
            record = trained_and_tested(ctx, key, BOTTLENECK_MINUTES)
            return {**summary(record), "buckets": bucket_scores(record)}

        records = {k: ctx.part(f"{k}-{BOTTLENECK_MINUTES}", lambda k=k: scored(k)) for k in keys}
        labels = [f"{low}–{high}" if high < 10_000 else f"{low}+" for low, high in BUCKETS]
        rows = [[labels[i], records[keys[0]]["buckets"][i][0], *[records[k]["buckets"][i][1] for k in keys]]
                for i in range(len(BUCKETS))]
        rows.append(["all", sum(r[1] for r in rows), *[records[k]["bleu"] for k in keys]])
        budget = "a few updates (--quick)" if ctx.quick else f"{BOTTLENECK_MINUTES} CPU minutes of training"
        reading = (
            f"Test verses grouped by their German length in words; BLEU within each group after {budget} each ("
            + ", ".join(f"{LABELS[k]}: {records[k]['steps']} updates" for k in keys) + "). "
            + _verdict(records, keys, labels))
        columns = ["source words", "verses", *[f"{LABELS[k]} BLEU" for k in keys]]
        return Outcome(columns, rows, reading, {"labels": labels, "keys": list(keys),
                                                "bleu": {k: [b for _, b in records[k]["buckets"]] for k in keys}})

    def plot(self, outcome: Outcome, path: Path) -> None:
        from transformer.experiments.plots import line_plot

        d = outcome.details
        centres = [(low + min(high, 60)) / 2 for low, high in BUCKETS]
        line_plot(path, centres, {LABELS[k]: (d["bleu"][k], None) for k in d["keys"]}, "source length (words)",
                  "test BLEU", "BLEU by source length (Bahdanau et al. 2015, Figure 2, on our data)")


def _verdict(records: dict, keys: tuple[str, ...], labels: list[str]) -> str:
    text = []
    for k in keys:
        scores = {i: b for i, (_, b) in enumerate(records[k]["buckets"]) if b == b}  # NaN: an empty bucket
        if len(scores) >= 2:
            best, last = max(scores, key=scores.get), max(scores)
            text.append(f"{LABELS[k]} peaks at {labels[best]} words ({scores[best]:.2f}) and scores "
                        f"{scores[last]:.2f} on the longest verses ({labels[last]} words)")
    verdict = "; ".join(text) + ". "
    plain, attention = records["lstm"]["buckets"], records["lstm-attention"]["buckets"]
    gaps = [a - p for (_, p), (_, a) in zip(plain, attention, strict=True) if p == p and a == a]
    if len(gaps) >= 2:
        verdict += (f"Attention's gain over the fixed vector is {gaps[0]:+.2f} BLEU on the shortest verses and "
                    f"{gaps[-1]:+.2f} on the longest: "
                    + ("it grows with length, as claimed." if gaps[-1] > gaps[0] else "it does not grow with length "
                       "here, against the claim."))
    return verdict
