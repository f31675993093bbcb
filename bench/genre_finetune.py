"""Pretrain, then fine-tune: Bible genre test accuracy of the pretrained encoder against the same model trained
from scratch, at 1%, 10% and 100% of the labels, beside TF-IDF + logistic regression.

usage: python bench/genre_finetune.py [--config configs/bert-bible-genre.yaml] [--pretrained runs/bert-bible-mlm]
                                      [--out runs/genre-finetune] [--fractions 0.01 0.1 1] [--seeds 0 1 2]
                                      [--steps 300 500 1000] [--threads 2] [--arms pretrained scratch]
                                      [--set model.pooling=mean]

Pretrain first: `transformer train configs/bert-bible-mlm.yaml` (20 minutes). Each fine-tuning run is
`transformer train CONFIG --set data.label_fraction=F --set train.seed=S --set train.max_steps=N` with
`train.init_from` the pretrained directory ("pretrained") or null ("scratch"), into OUT/<arm>-<F>-<S>; runs
already there are read back, not trained again (the script can be stopped and restarted). The label subset of a
(fraction, seed) is the same for all three contenders (`stratified_subset`). Every model is chosen on the valid
books' accuracy (the trainer's best checkpoint; C of the logistic regression) and scored once on the test books.
The 100% fraction runs with the first seed only. The last line is one JSON object; a markdown table before it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit_json, machine, set_threads  # noqa: E402

import transformer  # noqa: E402
from transformer.config import RunConfig  # noqa: E402
from transformer.data.datasets import load_labelled  # noqa: E402
from transformer.evaluation.classification import stratified_subset  # noqa: E402
from transformer.training.tasks.classify import label_names  # noqa: E402
from transformer.training.trainer import train  # noqa: E402

C_GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)


def finetune(config_path: str, out: Path, init_from: str | None, fraction: float, seed: int, steps: int,
             extra: list[str]) -> dict:
    """Train one arm (or read it back) and score its best weights on the test books."""
    result_file = out / "test.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    overrides = [f"data.label_fraction={fraction}", f"train.seed={seed}", f"train.max_steps={steps}",
                 f"train.init_from={init_from or 'null'}", *extra]
    print(f"# transformer train {config_path} " + " ".join(f"--set {o}" for o in overrides) + f" --out {out}",
          flush=True)
    started = time.perf_counter()
    state = train(RunConfig.load(config_path, overrides), out, progress_bar=False)
    bundle = transformer.load(out)
    texts, labels = load_labelled(bundle.config.data, "test")
    scores = bundle.score_labelled(texts, labels, "the test split")
    result = {"test_accuracy": round(scores["accuracy"], 4),
              "test_balanced_accuracy": round(scores["balanced_accuracy"], 4),
              "valid_accuracy": state.best_score, "best_step": state.best_step, "steps": state.step,
              "seconds": round(time.perf_counter() - started, 1)}
    result_file.write_text(json.dumps(result))
    return result


def tfidf(data, names: tuple[str, ...], fraction: float, seed: int) -> dict:
    """TF-IDF (words, 1-2 grams, sublinear tf) + logistic regression on the same label subset; C on valid."""
    (x, y), (vx, vy), (tx, ty) = (data[split] for split in ("train", "valid", "test"))
    index = {name: i for i, name in enumerate(names)}
    keep = stratified_subset([index[label] for label in y], fraction, seed)
    x, y = [x[i] for i in keep], [y[i] for i in keep]
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    train_x, valid_x, test_x = vectorizer.fit_transform(x), vectorizer.transform(vx), vectorizer.transform(tx)
    fitted = {c: LogisticRegression(C=c, max_iter=3000).fit(train_x, y) for c in C_GRID}
    best = max(C_GRID, key=lambda c: fitted[c].score(valid_x, vy))
    predicted = fitted[best].predict(test_x)
    return {"test_accuracy": round(fitted[best].score(test_x, ty), 4),
            "test_balanced_accuracy": round(balanced_accuracy_score(ty, predicted), 4),
            "valid_accuracy": round(fitted[best].score(valid_x, vy), 4), "C": best, "n_train": len(y)}


def summary(runs: list[dict]) -> str:
    values = [r["test_accuracy"] for r in runs]
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ({min(values):.4f}–{max(values):.4f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/bert-bible-genre.yaml")
    parser.add_argument("--pretrained", default="runs/bert-bible-mlm")
    parser.add_argument("--out", type=Path, default=Path("runs/genre-finetune"))
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    parser.add_argument("--steps", type=int, nargs="+", default=[300, 500, 1000], help="max_steps per fraction")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--arms", nargs="+", default=["pretrained", "scratch"], choices=["pretrained", "scratch"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=C",
                        help="also set this in every run's config (an ablation, e.g. model.pooling=mean)")
    args = parser.parse_args()
    if len(args.steps) != len(args.fractions):
        parser.error(f"--steps gives {len(args.steps)} budgets for {len(args.fractions)} fractions")
    set_threads(args.threads)
    if not (Path(args.pretrained) / "model.safetensors").is_file():
        sys.exit(f"error: no pretrained model in {args.pretrained}; run `transformer train "
                 "configs/bert-bible-mlm.yaml` first")

    config = RunConfig.load(args.config, ["train.init_from=null"])
    data = {split: load_labelled(config.data, split) for split in ("train", "valid", "test")}
    names = label_names(config, data["train"][1])  # the order the task draws each class's subset in
    figures: dict = {"machine": machine(), "train_verses": len(data["train"][0]), "valid_verses": len(data["valid"][0]),
                     "test_verses": len(data["test"][0]), "rows": []}
    for fraction, steps in zip(args.fractions, args.steps, strict=True):
        seeds = args.seeds if fraction < 1 else args.seeds[:1]
        row: dict = {"fraction": fraction, "steps": steps, "seeds": seeds}
        for arm in args.arms:
            init_from = args.pretrained if arm == "pretrained" else None
            row[arm] = [finetune(args.config, args.out / f"{arm}-{fraction}-{seed}", init_from, fraction, seed, steps,
                                 args.overrides) for seed in seeds]
            print(arm, fraction, row[arm], flush=True)
        row["tfidf_logreg"] = [tfidf(data, names, fraction, seed) for seed in seeds]
        print("tfidf_logreg", fraction, row["tfidf_logreg"], flush=True)
        figures["rows"].append(row)

    print("\n| labels | train verses | pretrained, fine-tuned | from scratch | TF-IDF + logistic regression |")
    print("|---|---|---|---|---|")
    for row in figures["rows"]:
        n = row["tfidf_logreg"][0]["n_train"]
        cells = [summary(row[arm]) if arm in row else "" for arm in ("pretrained", "scratch")]
        print(f"| {row['fraction']:.0%} | {n:,} | {' | '.join(cells)} | {summary(row['tfidf_logreg'])} |")
    emit_json(figures)


if __name__ == "__main__":
    main()
