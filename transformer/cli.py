"""The `transformer` command line: the parser and the dispatch to each command's handler. Argument parsing and
printing live in the cli*.py modules and nowhere else: cli_translate.py (translate, evaluate), cli_family.py
(generate, predict, embed, evaluate of the other tasks), cli_tools.py (average-checkpoints), cli_logging.py
(-v, -vv, --log) and cli_io.py (input lines and output paths); serve/cli.py (serve, the HTTP API)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from transformer.cli_experiment import add_experiment_command, cmd_experiment
from transformer.cli_family import cmd_embed, cmd_generate, cmd_predict
from transformer.cli_logging import (
    add_global_flags,
    add_global_flags_to_subcommands,
    configured_logging,
    logging_options,
)
from transformer.cli_prepare import add_prepare_command, cmd_prepare
from transformer.cli_tools import add_average_checkpoints, cmd_average_checkpoints
from transformer.cli_translate import add_translate_commands, cmd_evaluate, cmd_translate
from transformer.cli_viz import add_viz_commands, cmd_attention, cmd_embeddings, cmd_plot
from transformer.config import check_override_sections
from transformer.devices import DEVICE_HELP
from transformer.serve.cli import add_serve_command, cmd_serve

log = logging.getLogger("transformer")
# ctranslate2's weight types (transformer.interop.ct2.QUANTIZATIONS, not imported here: it loads torch)
CT2_QUANTIZATIONS = ["float32", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16",
                     "bfloat16"]
DESCRIPTION = ("Train, evaluate and run Transformer models: translation (encoder-decoder), language models, "
               "BERT-style encoders, text classifiers and Vision Transformers.")
EXAMPLES = """examples:
  transformer data export bible --src e --tgt 2 --out data/bible-de-en
  transformer train configs/bible-de-en.yaml --set train.max_minutes=30 -v --log train.log
  transformer translate --model runs/bible-de-en --beam 4 --input de.txt --output en.txt
  transformer evaluate --model runs/bible-de-en --split test --limit 100
  transformer generate --model runs/gpt-bible-en --prompt "And God said" --top-k 40 --seed 0
  transformer import-hf Helsinki-NLP/opus-mt-de-en --out runs/opus-mt-de-en
  transformer average-checkpoints --model runs/bible-de-en --last 5 --out runs/bible-de-en/averaged.safetensors
  transformer serve --model runs/bible-de-en --port 8000
  transformer experiment long-range --quick

`transformer COMMAND --help` lists a command's options. -v, -vv and --log FILE go before or after the command."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transformer", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from transformer import __version__

    parser.add_argument("--version", action="version", version=f"transformer {__version__}")
    add_global_flags(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     help="what to do; `transformer COMMAND --help` lists its options")

    data_parser = commands.add_parser("data", help="list and export corpora")
    data = data_parser.add_subparsers(dest="data_command", required=True, help="list or export")
    data.add_parser("list", help="Bible translations available, with codes, languages and names")
    export = data.add_parser("export", help="write train/valid/test plain-text files")
    export.add_argument("corpus", choices=["bible"], help="the corpus to export: bible (parallel Bible verses)")
    export.add_argument("--src", required=True, help="source translation code (see `transformer data list`)")
    export.add_argument("--tgt", required=True, help="target translation code")
    export.add_argument("--out", required=True, type=Path, help="output directory")

    train = commands.add_parser("train", help="train a model (its config's task: translation, lm, mlm, classify, "
                                              "image)")
    train.add_argument("config", help="YAML config (see configs/)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=C",
                       help="override a config value, e.g. --set train.max_steps=100 (repeatable)")
    train.add_argument("--out", type=Path, help="model directory to write (default: runs/<config name>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--device", default="auto", help=DEVICE_HELP)

    add_prepare_command(commands)  # cli_prepare.py: a corpus tokenized once into a cache (data/prepared.py)
    add_experiment_command(commands)  # cli_experiment.py: the notes' claims measured (transformer/experiments/)
    add_translate_commands(commands)  # translate, evaluate
    generate = commands.add_parser("generate", help="continue a prompt with a language model (task: lm), "
                                                    "streaming the tokens as they come")
    generate.add_argument("--model", required=True, type=Path, help="model directory of a language model")
    generate.add_argument("--prompt", default="", help="text to continue (default: none, start from <bos>)")
    generate.add_argument("--device", default="auto", help=DEVICE_HELP)
    generate.add_argument("--max-new-tokens", type=int, default=100, help="most tokens to add (default: 100)")
    generate.add_argument("--temperature", type=float, default=1.0,
                          help="divide the logits by this (> 0; default 1: the model's distribution)")
    generate.add_argument("--top-k", type=int, help="draw among the k most probable tokens only")
    generate.add_argument("--top-p", type=float, help="draw from the nucleus of probability mass p, in (0, 1]")
    generate.add_argument("--num-samples", type=int, default=1, help="continuations to draw (default: 1)")
    generate.add_argument("--seed", type=int, help="seed of the draws: the same seed gives the same text")
    embed = commands.add_parser("embed", help="sentence embeddings of an encoder-only model (mlm, classify): a line "
                                              "in, a JSON list out (the mean of its token states; model.embed_pooling: "
                                              "mean, cls or max)")
    embed.add_argument("--model", required=True, type=Path, help="model directory of an encoder-only model")
    embed.add_argument("--input", type=Path, help="input file, one text a line (default: stdin)")
    embed.add_argument("--normalize", action="store_true", help="L2-normalize each vector")
    predict = commands.add_parser("predict", help="classify texts (task: classify) or image files (task: image), "
                                                  "a JSON line each")
    predict.add_argument("--model", required=True, type=Path, help="model directory of a classifier or image model")
    predict.add_argument("inputs", nargs="*", help="image files (PNG, JPEG, ...: resized to the model's size; grey, "
                                                   "light backgrounds inverted for our digit models, as its "
                                                   "ViTImageProcessor for an imported ViT), or texts for a text "
                                                   "classifier")
    predict.add_argument("--input", type=Path, help="a text classifier's input file, one text a line (default: "
                                                    "the arguments, else stdin)")
    onnx = commands.add_parser("export-onnx", help="export the encoder and one decoder step (KV cache in/out) to ONNX")
    onnx.add_argument("--model", required=True, type=Path, help="model directory written by `transformer train`")
    onnx.add_argument("--out", required=True, type=Path,
                      help="directory to write encoder.onnx, decoder.onnx, onnx_config.json and tokenizer.json")
    onnx.add_argument("--opset", type=int, default=18, help="ONNX opset version, 18..22 (default: 18)")
    onnx.add_argument("--max-length", type=int,
                      help="longest source and output the graphs accept (default: the model's max_positions)")
    onnx.add_argument("--weights", default="model.safetensors", help="weights file inside the model directory")
    ct2 = commands.add_parser("export-ct2", help="export to a CTranslate2 model (translate --engine ctranslate2)")
    ct2.add_argument("--model", required=True, type=Path,
                     help="model directory written by `transformer train` or `transformer import-hf`")
    ct2.add_argument("--out", type=Path, help="directory to write (default: MODEL/ctranslate2, where "
                                              "--engine ctranslate2 reads it); must not exist")
    ct2.add_argument("--quantization", default="float32", choices=CT2_QUANTIZATIONS,
                     help="weight type: float32 (default; the same tokens as the torch engine), int8 (int8 weights, "
                          "fp32 elsewhere), ...")
    ct2.add_argument("--weights", default="model.safetensors", help="weights file inside the model directory")
    hf = commands.add_parser("import-hf", help="convert a Hugging Face Marian or BART model (a directory, or a Hub "
                                               "id) into a model directory")
    hf.add_argument("hf_dir", type=Path, metavar="DIR_OR_ID",
                    help="directory written by save_pretrained: config.json, model.safetensors or pytorch_model.bin, "
                         "and the tokenizer (tokenizer.json, or Marian's source.spm, target.spm, vocab.json); or a "
                         "Hub id such as Helsinki-NLP/opus-mt-de-en, read from the Hugging Face cache ($HF_HOME) "
                         "and downloaded when missing (never with HF_HUB_OFFLINE=1)")
    hf.add_argument("--out", required=True, type=Path, help="model directory to write (must not hold a model)")
    hf.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=C",
                    help="set a data or decode value of the written config.yaml, e.g. --set decode.beam=4 "
                         "or --set data.test_src=F (repeatable)")
    export_hf = commands.add_parser("export-hf", help="write a model directory as a Hugging Face save_pretrained "
                                                      "directory (Marian or BART, ViT, ...: transformers loads it)")
    export_hf.add_argument("--model", required=True, type=Path,
                           help="model directory written by `transformer train` or `transformer import-hf`")
    export_hf.add_argument("--out", required=True, type=Path,
                           help="directory to write config.json, model.safetensors and the type's other files "
                                "(must not exist, or be empty)")
    add_average_checkpoints(commands)
    add_viz_commands(commands)  # attention, embeddings, plot
    add_serve_command(commands)  # transformer/serve/
    add_global_flags_to_subcommands(parser)  # last: every subcommand gets -v and --log
    return parser


def _cmd_data(args: argparse.Namespace) -> None:
    from transformer.data.corpora import bible_translations, export_bible

    if args.data_command == "list":
        print(f"{'code':<5} {'language':<22} {'verses':>6}  translation")
        for t in bible_translations():
            print(f"{t.code:<5} {t.language:<22} {t.n_verses:>6}  {t.name}")
    else:
        counts = export_bible(args.src, args.tgt, args.out)
        for split, n in counts.items():
            print(f"{split}: {n} pairs -> {args.out / (split + '.src')}, {args.out / (split + '.tgt')}")


def _cmd_train(args: argparse.Namespace) -> None:
    from transformer.config import RunConfig
    from transformer.data.datasets import check_files
    from transformer.training.tasks import TASKS
    from transformer.training.trainer import train

    config = RunConfig.load(args.config, args.overrides)
    check_files(config.data)  # before the config is printed and --out is made
    out = args.out or Path("runs") / Path(args.config).stem
    print(f"# resolved config -> {out / 'config.yaml'}\n{config.to_yaml()}", flush=True)
    state = train(config, out, resume=args.resume, progress_bar=not args.no_progress, device=args.device)
    metric = TASKS[config.task].metric
    print(json.dumps({"out": str(out), "task": config.task, "steps": state.step, "epochs": state.epoch,
                      "train_minutes": round(state.train_seconds / 60, 2), f"best_valid_{metric}": state.best_score,
                      "best_step": state.best_step}))


def _cmd_export_onnx(args: argparse.Namespace) -> None:
    from transformer.interop.onnx import export_model_dir, require
    from transformer.model_config import refuse_baseline
    from transformer.model_dir import read_config

    require("onnx", "ONNX export")  # a missing package is named before the model directory is read
    require("onnxscript", "ONNX export (torch's exporter)")
    refuse_baseline(read_config(args.model).model.type, "export-onnx",
                    "it runs in PyTorch: transformer translate, predict, evaluate, embed, serve")
    if read_config(args.model).model.type == "decoder_only":  # one graph with its KV cache
        from transformer.interop.onnx_decoder_only import export_decoder_only

        config = export_decoder_only(args.model, args.out, opset=args.opset, max_length=args.max_length,
                                     weights=args.weights)
        print(f"wrote {args.out / config['file']}: tokens and the past keys/values -> logits and the present ones")
        print(json.dumps({"out": str(args.out), "opset": config["opset"], "max_length": config["max_length"]}))
        return
    if read_config(args.model).model.type == "encoder_only":  # one graph: interop/onnx_encoder_only.py
        from transformer.interop.onnx_encoder_only import export_encoder_only

        config = export_encoder_only(args.model, args.out, opset=args.opset, max_length=args.max_length,
                                     weights=args.weights)
        print(f"wrote {args.out / config['file']}: tokens -> {', '.join(config['outputs'])}")
        print(json.dumps({"out": str(args.out), "opset": config["opset"], "max_length": config["max_length"]}))
        return
    config = export_model_dir(args.model, args.out, opset=args.opset, max_length=args.max_length,
                              weights=args.weights)
    layers = f"{{key,value}}_{{0..{config['n_layers'] - 1}}}"
    signatures = {
        config["encoder_file"]: f"src -> memory, cross_{layers}",
        config["decoder_file"]: f"tokens, src_mask, past_{layers}, cross_{layers} -> logits, present_{layers}",
    }
    for name, signature in signatures.items():
        path = args.out / name
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {signature}")
    print(f"wrote {args.out / 'onnx_config.json'}, {args.out / 'tokenizer.json'}")
    print(json.dumps({"out": str(args.out), "opset": config["opset"], "n_layers": config["n_layers"],
                      "max_length": config["max_length"]}))


def _cmd_export_ct2(args: argparse.Namespace) -> None:
    from transformer.interop.ct2 import export_model_dir  # it refuses the baselines (model_config.refuse_baseline)

    out = export_model_dir(args.model, args.out, quantization=args.quantization, weights=args.weights)
    size = (out / "model.bin").stat().st_size / 1e6
    print(f"wrote {out}: model.bin ({size:.1f} MB, {args.quantization}), config.json, vocabulary, tokenizer")
    print(json.dumps({"out": str(out), "quantization": args.quantization, "model_mb": round(size, 1)}))


def _cmd_import_hf(args: argparse.Namespace) -> None:
    from transformer.interop.huggingface import import_hf

    check_override_sections(args.overrides, ("data", "decode"), "the model section comes from the checkpoint, "
                            "and an imported model is not trained")
    config = import_hf(args.hf_dir, args.out, args.overrides)
    m = config.model
    print(f"wrote {args.out}: {', '.join(sorted(p.name for p in args.out.iterdir()))}")
    layers = [m.n_layers] if m.single_stack else [m.n_encoder_layers, m.n_decoder_layers]
    size = ({"image_size": m.image_size, "classes": m.n_classes} if m.type == "vision"  # no vocabulary, no decoding
            else {"vocab": [m.src_vocab_size, m.tgt_vocab_size], "beam": config.decode.beam,
                  "alpha": config.decode.alpha})
    print(json.dumps({"out": str(args.out), "task": config.task, "d_model": m.d_model, "layers": layers, **size}))


def _cmd_export_hf(args: argparse.Namespace) -> None:
    from transformer.interop.export_hf import export_hf

    export_hf(args.model, args.out)
    print(f"wrote {args.out}: {', '.join(sorted(p.name for p in args.out.iterdir()))}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {"data": _cmd_data, "train": _cmd_train, "translate": cmd_translate, "evaluate": cmd_evaluate,
               "generate": cmd_generate, "predict": cmd_predict, "embed": cmd_embed, "export-onnx": _cmd_export_onnx,
               "export-ct2": _cmd_export_ct2, "import-hf": _cmd_import_hf, "export-hf": _cmd_export_hf,
               "average-checkpoints": cmd_average_checkpoints, "serve": cmd_serve,
               "attention": cmd_attention, "embeddings": cmd_embeddings, "plot": cmd_plot, "prepare": cmd_prepare,
               "experiment": cmd_experiment}
    try:
        with configured_logging(*logging_options(args)):  # a --log in a missing directory: error before any work
            handler[args.command](args)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint is kept", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`translate ... | head`): stop quietly, as other filters do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())
