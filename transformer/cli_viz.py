"""`transformer attention`, `transformer embeddings` and `transformer plot` (cli.py registers and dispatches them):
look inside a model. The work is in transformer/viz/ (attention.py, attention_plots.py, embeddings.py, curves.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

MAX_HEATMAP_TOKENS = 65  # a ViT with more tokens (patches + [CLS]) gets its rollout only


def add_viz_commands(commands: argparse._SubParsersAction) -> None:
    """Add `attention`, `embeddings` and `plot` to the `transformer` subcommands."""
    attention = commands.add_parser(
        "attention", help="draw attention weights as PNG heatmaps (a file per layer and head, a grid per kind): "
                          "encoder, decoder and cross-attention of a translation; self-attention of a GPT or BERT; "
                          "attention rollout over an image for a ViT")
    attention.add_argument("--model", required=True, type=Path, help="model directory (any task)")
    attention.add_argument("--text", help="the text to read: a translation model translates it with its decode "
                                          "settings first; a GPT or BERT model reads it")
    attention.add_argument("--image", type=Path, help="a ViT's image file, read as `transformer predict` reads it")
    attention.add_argument("--out", type=Path, help="directory for the PNGs (created if missing)")
    attention.add_argument("--layer", type=int, help="only this layer (0-based, -1 the last): its heatmaps, and "
                                                     "the layer --align uses (default: all layers; --align: the last)")
    attention.add_argument("--align", action="store_true",
                           help="a translation model: print, for each output token, the source token with the "
                                "highest cross-attention of --layer averaged over its heads")

    embeddings = commands.add_parser(
        "embeddings", help="probe the input token embedding matrix (cosine similarity): nearest words, analogies, "
                           "a 2-D PCA picture")
    embeddings.add_argument("--model", required=True, type=Path, help="model directory of a text model")
    embeddings.add_argument("--nearest", metavar="WORD", help="print the --k whole words nearest to WORD")
    embeddings.add_argument("--analogy", nargs=3, metavar=("A", "B", "C"),
                            help="print the --k whole words nearest to A - B + C (king man woman: "
                                 "king - man + woman), A, B and C left out")
    embeddings.add_argument("--plot", nargs="+", metavar="WORD", help="draw these words' 2-D PCA projection to --out")
    embeddings.add_argument("--out", type=Path, metavar="FILE.png", help="the PNG --plot writes")
    embeddings.add_argument("--k", type=int, default=10, help="answers to print (default: 10)")

    plot = commands.add_parser("plot", help="draw training curves from metrics.jsonl, or the positional-encoding "
                                            "matrix, as a PNG")
    plot.add_argument("--metrics", type=Path, metavar="FILE",
                      help="metrics.jsonl of a run (e.g. runs/NAME/metrics.jsonl): loss and validation metric curves")
    plot.add_argument("--positions", type=int, metavar="N",
                      help="draw the sinusoidal positional encoding of N positions (section 3.5)")
    plot.add_argument("--d-model", type=int, default=512, help="dimensions of --positions (default: 512)")
    plot.add_argument("--out", required=True, type=Path, metavar="FILE.png", help="the PNG to write")


def cmd_attention(args: argparse.Namespace) -> None:
    from transformer.model_config import BAG_TYPES, refuse_baseline
    from transformer.model_dir import read_config

    config = read_config(args.model)
    if config.model.type in BAG_TYPES:
        refuse_baseline(config.model.type, "attention", "it weighs every token alike (draw the attention of an "
                        "encoder_only classifier instead)")
    if args.out is None and not args.align:
        raise ValueError("attention: give --out DIR to draw the heatmaps, or --align to print an alignment")
    if config.task == "image":
        return _image_attention(args, config)
    if args.image is not None:
        raise ValueError(f"--image: {args.model} is a {config.task!r} model, which reads text; give --text instead")
    if not args.text:
        raise ValueError(f"{args.model} reads text; give it with --text \"...\"")
    refuse_baseline(config.model.type, "attention (heatmaps of attention heads)",
                    "its additive attention's weights are RecurrentEncoderDecoder.alignments(src, tgt)")
    if args.align and config.task != "translation":
        raise ValueError(f"--align needs a translation model; {args.model} is a {config.task!r} model")
    from transformer.inference import load_model_dir
    from transformer.viz import attention as viz

    model, tokenizer, config = load_model_dir(args.model)
    if config.task == "translation":
        output = viz.translate_ids(model, tokenizer, args.text, config)
        print(f"translation: {tokenizer.decode(output)}")
        maps = viz.translation_attention(model, tokenizer, args.text, output, config)
    else:
        maps = viz.self_attention(model, tokenizer, args.text, config.data.max_len)
    kinds = [("encoder", maps.encoder), ("decoder", maps.decoder), ("cross", maps.cross)]
    if args.layer is not None:
        for kind, layers in kinds:
            if layers:
                viz.check_layer(args.layer, len(layers), kind)
    if args.align:
        for target, source, weight in viz.alignment(maps, -1 if args.layer is None else args.layer):
            print(f"{target}\t{source}\t{weight:.3f}")
    if args.out is not None:
        _draw(maps, args.out, args.layer)


def _draw(maps, out: Path, layer: int | None) -> None:
    from transformer.viz.attention_plots import save_attention

    written = save_attention(maps, out, layer)
    print(f"wrote {len(written)} PNGs to {out}: KIND-layerL-headH.png and KIND-grid.png")


def _image_attention(args: argparse.Namespace, config) -> None:
    if args.image is None:
        raise ValueError(f"{args.model} is an image model; give the image with --image FILE (not --text)")
    if args.align:
        raise ValueError("--align needs a translation model; an image model has no cross-attention")
    if args.out is None:
        raise ValueError("attention of an image model: give --out DIR for the rollout picture")
    from transformer.data.images import read_for_model
    from transformer.inference import load_model_dir
    from transformer.viz import attention as viz
    from transformer.viz.attention_plots import plot_rollout

    model, _, config = load_model_dir(args.model)
    image = read_for_model(args.image, config.model)  # (1, C, H, W)
    maps = viz.vit_attention(model, image)
    if args.layer is not None:
        viz.check_layer(args.layer, len(maps.encoder), "encoder")
    m = config.model
    grid = viz.cls_rollout(maps.encoder, m.image_size // m.patch_size)
    args.out.mkdir(parents=True, exist_ok=True)
    path = plot_rollout(image[0].numpy(), grid, args.out / "rollout.png", f"{args.image.name}: {args.model.name}")
    print(f"wrote {path}")
    if len(maps.source_tokens) <= MAX_HEATMAP_TOKENS:
        _draw(maps, args.out, args.layer)
    else:
        print(f"{len(maps.source_tokens)} tokens: too many for readable heatmaps; drew the rollout only")


def cmd_embeddings(args: argparse.Namespace) -> None:
    from transformer.model_dir import read_config

    if read_config(args.model).task == "image":
        raise ValueError(f"{args.model} is an image model, which has no token embeddings; give a text model")
    if args.nearest is None and args.analogy is None and args.plot is None:
        raise ValueError("embeddings: give --nearest WORD, --analogy A B C or --plot WORD... --out FILE.png")
    if args.plot is not None and args.out is None:
        raise ValueError("--plot needs --out FILE.png, the picture to write")
    from transformer.inference import load_model_dir
    from transformer.viz import embeddings as emb

    model, tokenizer, _ = load_model_dir(args.model)
    table = emb.model_embeddings(model, tokenizer)
    print(f"# {table.matrix.shape[0]} x {table.matrix.shape[1]} token embedding matrix ({table.side}); answers are "
          "whole-word tokens, by cosine similarity")
    if args.nearest is not None:
        _ranking(f"nearest to {args.nearest!r}", *emb.nearest(table, args.nearest, args.k))
    if args.analogy is not None:
        a, b, c = args.analogy
        _ranking(f"{a} - {b} + {c}", *emb.analogy(table, a, b, c, args.k))
    if args.plot is not None:
        _, notes = emb.plot_words(table, args.plot, args.out)
        for note in notes:
            print(note)
        print(f"wrote {args.out}: 2-D PCA of {len(args.plot)} words")


def _ranking(title: str, ranked: list[tuple[str, float]], notes: list[str]) -> None:
    for note in notes:
        print(note)
    print(title)
    for rank, (token, similarity) in enumerate(ranked, 1):
        print(f"{rank:>3}  {token}\t{similarity:.4f}")


def cmd_plot(args: argparse.Namespace) -> None:
    if (args.metrics is None) == (args.positions is None):
        raise ValueError("plot: give one of --metrics FILE (training curves) or --positions N (positional encoding)")
    if args.metrics is not None:
        from transformer.viz.curves import plot_loss

        if not args.metrics.is_file():
            raise FileNotFoundError(f"--metrics {args.metrics}: no such file; give a run's metrics.jsonl")
        print(f"wrote {plot_loss(args.metrics, args.out)}")
        return
    if args.positions < 1:
        raise ValueError(f"--positions {args.positions}: draw at least 1 position")
    from transformer.viz.attention_plots import plot_positional

    print(f"wrote {plot_positional(args.out, args.positions, args.d_model)}")
