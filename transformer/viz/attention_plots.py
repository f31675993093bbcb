"""PNG drawings of attention (viz/attention.py): a heatmap per layer and head with token labels, a grid overview
per kind, attention rollout over an image, and the sinusoidal positional-encoding matrix (section 3.5).

Every heatmap figure is `heatmap_size(queries, keys)` inches at DPI dots per inch, so its pixel size is known
(no tight bounding box). Matplotlib draws with the Agg backend in DejaVu Sans, falling back to a CJK font
(CJK_FONTS) where one is installed; without one, Chinese and Japanese labels show as boxes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transformer.viz.attention import AttentionMaps

DPI = 100
KINDS = ("encoder", "decoder", "cross")
TITLES = {"encoder": "self-attention", "decoder": "decoder masked self-attention", "cross": "cross-attention"}


# fallbacks for Chinese and Japanese labels, where installed
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
             "SimHei", "Microsoft YaHei", "Arial Unicode MS")


def _pyplot():
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    plt.rcParams["font.family"] = ["DejaVu Sans", *(name for name in CJK_FONTS if name in installed)]
    warnings.filterwarnings("ignore", message="Glyph .* missing from font")  # drawn as boxes; said in the docstring
    return plt


def _save(plt, fig, out_path: str | Path) -> Path:
    """Write `fig` to `out_path` as a PNG at DPI and free it."""
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=DPI)
    plt.close(fig)
    return out_path


def heatmap_size(n_queries: int, n_keys: int) -> tuple[float, float]:
    """Inches (width, height) of one heatmap figure: 0.3 inch a token, 2.5 inches for labels and the color bar."""
    return 2.5 + 0.3 * max(n_keys, 4), 2.0 + 0.3 * max(n_queries, 4)


def _labels(maps: AttentionMaps, kind: str) -> tuple[list[str], list[str]]:
    """(query labels, key labels) of one kind: rows are steps producing a target token for decoder and cross."""
    if kind == "encoder":
        return maps.source_tokens, maps.source_tokens
    keys = maps.decoder_inputs if kind == "decoder" else maps.source_tokens
    return maps.target_tokens, keys


def _draw(ax, weights: np.ndarray, rows: list[str], cols: list[str], title: str, labels: bool = True):
    image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    if labels:
        ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_xlabel("key (attended to)", fontsize=8)
        ax.set_ylabel("query", fontsize=8)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    return image


def plot_head(weights: np.ndarray, rows: list[str], cols: list[str], title: str, out_path: str | Path) -> Path:
    """One (Q, K) weight matrix as a labelled heatmap PNG of heatmap_size(Q, K) inches at DPI."""
    plt = _pyplot()
    width, height = heatmap_size(len(rows), len(cols))
    fig, ax = plt.subplots(figsize=(width, height), dpi=DPI)
    image = _draw(ax, weights, rows, cols, title)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    fig.subplots_adjust(left=1.1 / width, bottom=1.2 / height, right=1 - 0.8 / width, top=1 - 0.45 / height)
    return _save(plt, fig, out_path)


def plot_grid(layers: list, rows: list[str], cols: list[str], kind: str, out_path: str | Path,
              name: str | None = None) -> Path:
    """Every layer (a row of panels) and head (a column) of one kind in one PNG; token labels on the left column
    and the bottom row only."""
    plt = _pyplot()
    n_layers, n_heads = len(layers), layers[0].shape[0]
    size = (1.5 + n_heads * (0.8 + 0.15 * len(cols)), 1.5 + n_layers * (0.8 + 0.15 * len(rows)))  # inches
    fig, axes = plt.subplots(n_layers, n_heads, squeeze=False, dpi=DPI, figsize=size)
    for layer, weights in enumerate(layers):
        for head in range(n_heads):
            ax = axes[layer][head]
            _draw(ax, np.asarray(weights[head]), rows, cols, f"layer {layer} head {head}", labels=False)
            if head == 0:
                ax.set_yticks(range(len(rows)), rows, fontsize=6)
            if layer == n_layers - 1:
                ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=6)
    fig.suptitle(f"{name or TITLES[kind]} ({kind}): all layers and heads", fontsize=11)
    fig.tight_layout()
    return _save(plt, fig, out_path)


def save_attention(maps: AttentionMaps, out_dir: str | Path, layer: int | None = None) -> list[Path]:
    """Write KIND-layerL-headH.png for every layer (or only `layer`) and head of each kind the maps hold, and
    KIND-grid.png per kind; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for kind in KINDS:
        layers = getattr(maps, kind)
        if not layers:
            continue
        rows, cols = _labels(maps, kind)
        name = "masked self-attention" if kind == "encoder" and _causal(layers) else TITLES[kind]
        chosen = range(len(layers)) if layer is None else [range(len(layers))[layer]]
        for i in chosen:
            for head in range(layers[i].shape[0]):
                title = f"{name}: layer {i}, head {head}"
                written.append(plot_head(np.asarray(layers[i][head]), rows, cols, title,
                                         out_dir / f"{kind}-layer{i}-head{head}.png"))
        written.append(plot_grid(layers, rows, cols, kind, out_dir / f"{kind}-grid.png", name))
    return written


def _causal(layers: list) -> bool:
    """Whether every weight above the diagonal is 0: a GPT's self-attention."""
    return layers[0].shape[-1] > 1 and all(not np.triu(np.asarray(w), k=1).any() for w in layers)


def plot_rollout(image: np.ndarray, grid: np.ndarray, out_path: str | Path, title: str = "") -> Path:
    """The [CLS] rollout `grid` (P, P), scaled to the image (C, H, W), laid over it, beside the image alone."""
    plt = _pyplot()
    channels = np.asarray(image, dtype=np.float64)
    picture = channels[0] if channels.shape[0] == 1 else np.moveaxis(channels[:3], 0, -1)
    picture = (picture - picture.min()) / max(float(picture.max() - picture.min()), 1e-12)  # shown in 0..1
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.2), dpi=DPI)
    height, width = picture.shape[:2]
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    for ax, overlay in zip(axes, (False, True), strict=True):
        ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, extent=extent, interpolation="nearest")
        if overlay:
            shown = ax.imshow(grid, cmap="inferno", alpha=0.6, extent=extent, interpolation="nearest")
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_title("input image", fontsize=10)
    axes[1].set_title("attention rollout of [CLS] over the patches", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(plt, fig, out_path)


def plot_positional(out_path: str | Path, length: int = 100, d_model: int = 512,
                    table: np.ndarray | None = None) -> Path:
    """The positional-encoding matrix as a heatmap, positions down, dimensions across: the paper's sinusoids
    (section 3.5) of `length` positions and `d_model` dimensions, or a given (learned) `table` (length, D)."""
    from transformer.nn.positional import sinusoidal_table

    plt = _pyplot()
    if table is None:
        table, what = sinusoidal_table(length, d_model).numpy(), "sinusoidal positional encoding (section 3.5)"
    else:
        what = "learned positional embedding"
    fig, ax = plt.subplots(figsize=(8, 5), dpi=DPI)
    shown = ax.imshow(table, cmap="RdBu", aspect="auto", interpolation="nearest")
    fig.colorbar(shown, ax=ax)
    ax.set_xlabel("dimension i")
    ax.set_ylabel("position")
    ax.set_title(f"{what}: {table.shape[0]} positions x {table.shape[1]} dimensions", fontsize=10)
    fig.tight_layout()
    return _save(plt, fig, out_path)
