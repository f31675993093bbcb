"""Training curves from metrics.jsonl, drawn with matplotlib (PNG)."""

from __future__ import annotations

import json
from pathlib import Path

# metrics.jsonl keys of the tasks' validation metrics, and their names on the plot.
VALID_METRICS = {"valid_bleu": "BLEU (greedy)", "valid_perplexity": "perplexity"}


def plot_loss(metrics_path: str | Path, out_path: str | Path) -> Path:
    """Training loss (and validation loss where logged) against the update step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, valid, metric, metric_name = [], [], [], None
    for line in Path(metrics_path).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "loss" in record:
            train.append((record["step"], record["loss"]))
        if "valid_loss" in record:
            valid.append((record["step"], record["valid_loss"]))
        for key in record:  # the task's validation metric: valid_bleu, valid_perplexity, ...
            if key in VALID_METRICS:
                metric.append((record["step"], record[key]))
                metric_name = VALID_METRICS[key]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss (label-smoothed)", linewidth=1)
    if valid:
        ax.plot(*zip(*valid, strict=True), "o-", label="valid loss (label-smoothed)")
    ax.set_xlabel("update step")
    ax.set_ylabel("loss per token")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    legend_axes = ax
    if metric:
        twin = ax.twinx()
        twin.plot(*zip(*metric, strict=True), "s--", color="tab:green", label=f"valid {metric_name}")
        twin.set_ylabel(f"valid {metric_name}")
        more_handles, more_labels = twin.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
        legend_axes = twin  # drawn last, so the legend sits above every line
    legend_axes.legend(handles, labels, loc="lower left", framealpha=1.0)
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
