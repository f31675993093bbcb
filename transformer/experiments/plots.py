"""The figures of the experiments: bars, and lines with a band of one standard deviation across seeds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from transformer.safe_files import atomic_path


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.subplots(figsize=(7, 4.2), dpi=100)


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as partial:
        fig.savefig(partial, format="png")
    plt.close(fig)


def bar_plot(path: Path, labels: Sequence[str], values: Sequence[float], ylabel: str, title: str,
             log: bool = False) -> None:
    plt, (fig, ax) = _figure()
    ax.bar(range(len(values)), values, color="tab:blue")
    ax.set_xticks(range(len(labels)), [label.replace(", ", ",\n") for label in labels], fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _save(plt, fig, path)


def line_plot(path: Path, x: Sequence[float], series: dict[str, tuple[Sequence[float], Sequence[float] | None]],
              xlabel: str, ylabel: str, title: str, *, logx: bool = False, logy: bool = False,
              hline: tuple[float, str] | None = None) -> None:
    """One line per series name: (means, standard deviations or None) over `x`; NaN values are left out."""
    plt, (fig, ax) = _figure()
    for name, (means, sds) in series.items():
        points = [(a, m, s) for a, m, s in zip(x, means, sds or [0.0] * len(means), strict=True) if m == m]
        if not points:
            continue
        xs, ms, ss = zip(*points, strict=True)
        ax.plot(xs, ms, marker="o", label=name)
        if sds is not None:
            ax.fill_between(xs, [m - s for m, s in zip(ms, ss, strict=True)],
                            [m + s for m, s in zip(ms, ss, strict=True)], alpha=0.2)
    if hline is not None:
        ax.axhline(hline[0], color="grey", linestyle="--", linewidth=1, label=hline[1])
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(plt, fig, path)
