"""scikit-learn baselines on the digits split of the image task: SVC and logistic regression.

usage: python bench/digits_baselines.py

The same split as `transformer train configs/vit-digits.yaml` (transformer/data/images.py): fit on train,
choose C on valid among a small grid, report valid and test accuracy (a fraction). Pixels in [0, 1] as the
Vision Transformer sees them. The last line is one JSON object.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit_json  # noqa: E402

from transformer.data.images import load_digits_split  # noqa: E402

GRID = (0.1, 1.0, 10.0, 100.0)


def flat(split: str):
    images, labels = load_digits_split(split)
    return images.reshape(len(labels), -1).numpy(), labels.numpy()


def main() -> None:
    (x, y), (vx, vy), (tx, ty) = flat("train"), flat("valid"), flat("test")
    figures: dict = {"train": len(y), "valid": len(vy), "test": len(ty)}
    makers = {"svc_rbf": lambda c: SVC(C=c, kernel="rbf", gamma="scale"),
              "logistic_regression": lambda c: LogisticRegression(C=c, max_iter=5000)}
    for name, make in makers.items():
        started = time.perf_counter()
        fitted = {c: make(c).fit(x, y) for c in GRID}
        best_c = max(GRID, key=lambda c: fitted[c].score(vx, vy))  # the first best on valid
        model = fitted[best_c]
        figures[name] = {"C": best_c, "valid_accuracy": round(model.score(vx, vy), 4),
                         "test_accuracy": round(model.score(tx, ty), 4),
                         "seconds": round(time.perf_counter() - started, 1)}
        print(name, figures[name], flush=True)
    emit_json(figures)


if __name__ == "__main__":
    main()
