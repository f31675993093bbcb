"""The `translate` and `evaluate` commands (cli.py registers and dispatches them): streaming translation with
scores and n-best lists, and BLEU and chrF of a model on a split or on --src/--ref files, or of existing
translations (--hyp/--ref) without a model. Other tasks' `evaluate` lives in cli_family.py."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from transformer.cli_family import evaluate_classify, evaluate_image, evaluate_lm
from transformer.cli_io import check_output, input_lines, reads_stdin, stream_lines
from transformer.config import SPLIT_NAMES, DecodeConfig
from transformer.devices import DEVICE_HELP

if TYPE_CHECKING:  # not imported at run time: it loads torch
    from transformer.inference import Translation

DEFAULT_BUFFER_SIZE = 64  # input lines translated together (--buffer-size)
T = TypeVar("T")


def add_translate_commands(commands: argparse._SubParsersAction) -> None:
    """Add `translate` and `evaluate` to the `transformer` subcommands."""
    translate = commands.add_parser("translate", help="translate text, one segment per line (stdin -> stdout), "
                                                      "writing each --buffer-size lines as soon as they are done")
    _decode_args(translate)
    translate.add_argument("--input", type=Path, help="input file, or - for stdin (default: stdin)")
    translate.add_argument("--output", type=Path, help="output file (default: stdout)")
    translate.add_argument("--buffer-size", type=int, metavar="N",
                           help=f"read N lines, translate them together, write them (default: {DEFAULT_BUFFER_SIZE};"
                                " 1 when stdin is a terminal: each line as it is typed)")
    translate.add_argument("--nbest", type=int, metavar="N",
                           help="write the N best translations of each line, best first, one a line as "
                                "index<TAB>score<TAB>text (index: the input line, counted from 0; N <= the beam)")
    translate.add_argument("--print-scores", action="store_true",
                           help="write score<TAB>text: the score the search ranked by (beam search: "
                                "log-probability / length penalty; greedy: the sum of token log-probabilities; "
                                "--nbest always writes scores)")

    evaluate = commands.add_parser("evaluate", help="score a held-out split: BLEU and chrF (sacrebleu) of a "
                                                    "translation model (or of --src/--ref files, or of existing "
                                                    "--hyp/--ref translations), perplexity of a language model, "
                                                    "accuracy of a text or image classifier")
    _decode_args(evaluate, model_required=False)
    evaluate.add_argument("--split", default="test", choices=SPLIT_NAMES, help="held-out split of the model's "
                                                                                 "data config (default: test)")
    evaluate.add_argument("--src", type=Path, help="translate this file (or - for stdin) instead of a split, and "
                                                   "score it against --ref")
    evaluate.add_argument("--ref", type=Path, help="reference translations, one a line, aligned with --src or --hyp")
    evaluate.add_argument("--hyp", type=Path, help="score these translations (a file, or - for stdin) against "
                                                   "--ref, without a model")
    evaluate.add_argument("--limit", type=int, help="score only the first N segments")
    evaluate.add_argument("--weights", default="model.safetensors",
                          help="weights file inside the model directory (e.g. snapshots/minute-30.safetensors)")
    evaluate.add_argument("--output", type=Path, help="also write the translations to this file")
    evaluate.add_argument("--images", type=Path, metavar="DIR",
                          help="an image model: score the image files in DIR/<class>/ (one folder per class, named "
                               "as model.labels) instead of a digits split")


def _decode_args(parser: argparse.ArgumentParser, model_required: bool = True) -> None:
    parser.add_argument("--model", required=model_required, type=Path,
                        help="model directory written by `transformer train` or `transformer import-hf`"
                             + ("" if model_required else " (not with --hyp)"))
    parser.add_argument("--beam", type=int, help="beam size (1 = greedy; default from the model's config)")
    parser.add_argument("--alpha", type=float, help="length penalty alpha (default from the model's config)")
    parser.add_argument("--batch-size", type=int, help="segments per decoding batch")
    parser.add_argument("--prefix", metavar="TEXT",
                        help="text put before every source line, e.g. T5's task prefix \"translate German to "
                             "English: \" (default: the model's decode.prefix, which import-hf takes from a T5 "
                             "checkpoint that names one translation task; '' for none)")
    parser.add_argument("--engine", default="torch", choices=["torch", "ctranslate2"],
                        help="torch (default), or ctranslate2: the export in MODEL/ctranslate2 (`export-ct2`)")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP + " (the torch engine)")


def _decode_config(args: argparse.Namespace, default: DecodeConfig) -> DecodeConfig:
    changes = {k: v for k, v in (("beam", args.beam), ("alpha", args.alpha), ("batch_size", args.batch_size),
                                 ("prefix", getattr(args, "prefix", None))) if v is not None}
    return dataclasses.replace(default, **changes)


@dataclass(frozen=True)
class _Engine:
    """A translation model behind --engine: its directory's RunConfig, translate(lines, decode, progress) ->
    texts, and scored(lines, decode, n_best) -> the n_best best Translations (text, score) of each line."""

    config: Any
    translate: Callable[[Sequence[str], DecodeConfig, bool], list[str]]
    scored: Callable[[Sequence[str], DecodeConfig, int], list[list[Translation]]]


def _translator(args: argparse.Namespace, weights: str = "model.safetensors") -> _Engine:
    """The model directory's translation model on the chosen --engine."""
    from transformer.model_dir import read_config

    task = read_config(args.model).task
    if task != "translation":
        raise ValueError(f"{args.model} holds a model for task {task!r}, which does not translate; "
                         "use `transformer generate` or `transformer evaluate` with it")
    if args.engine == "ctranslate2":
        import torch

        from transformer.interop.ct2 import load_ct2_dir

        if weights != "model.safetensors":
            raise ValueError("--weights applies to the torch engine; export those weights with "
                             "`transformer export-ct2 --weights ... --out DIR`")
        translator, config = load_ct2_dir(args.model, threads=torch.get_num_threads())
        max_len = config.data.max_len
        def prefixed(lines: Sequence[str], decode: DecodeConfig) -> list[str]:  # as inference._batches does
            return [decode.prefix + line for line in lines]

        return _Engine(config,
                       lambda lines, decode, progress: translator.translate(prefixed(lines, decode), decode, max_len),
                       lambda lines, decode, n: translator.translate_scored(prefixed(lines, decode), decode, max_len,
                                                                            n))
    from transformer.inference import load_model_dir, translate, translate_scored

    model, tokenizer, config = load_model_dir(args.model, weights, for_decoding=True, device=args.device)
    max_len = config.data.max_len
    return _Engine(config,
                   lambda lines, decode, progress: translate(model, tokenizer, lines, decode, max_len, progress),
                   lambda lines, decode, n: translate_scored(model, tokenizer, lines, decode, max_len, n))


def _skip_blank(lines: Sequence[str], run: Callable[[list[str]], Sequence[T]], blank: T) -> list[T]:
    """run(the non-blank lines), one result each, with `blank` in place of each blank line, in input order:
    blank lines never reach the model."""
    todo = [i for i, line in enumerate(lines) if line.strip()]
    results = [blank] * len(lines)
    if todo:
        for i, result in zip(todo, run([lines[i] for i in todo]), strict=True):
            results[i] = result
    return results


# -------------------------------------------------------------------------------------------- translate


def _buffer_size(args: argparse.Namespace) -> int:
    if args.buffer_size is None:
        return 1 if reads_stdin(args.input) and sys.stdin.isatty() else DEFAULT_BUFFER_SIZE
    if args.buffer_size < 1:
        raise ValueError(f"--buffer-size {args.buffer_size} must be at least 1 (lines translated together)")
    return args.buffer_size


def _check_nbest(nbest: int | None, beam: int) -> None:
    if nbest is None:
        return
    if nbest < 1:
        raise ValueError(f"--nbest {nbest} must be at least 1 (translations written per line)")
    if nbest > beam:
        raise ValueError(f"--nbest {nbest} exceeds the beam size {beam} (n-best > beam): raise it with --beam "
                         f"{nbest}, or lower --nbest")


def _chunks(lines: Iterator[str], size: int) -> Iterator[list[str]]:
    """`lines` in lists of `size` (the last may be shorter), each as soon as its lines have been read."""
    while chunk := list(itertools.islice(lines, size)):
        yield chunk


def _format_chunk(engine: _Engine, lines: list[str], decode: DecodeConfig, args: argparse.Namespace,
                  first: int) -> str:
    """The output text of the input `lines`, the first being input line `first` (from 0): a translation a line,
    or with --print-scores `score<TAB>text`, or with --nbest N lines `index<TAB>score<TAB>text` per input line
    (a blank input line: a blank line, or one empty translation of score 0)."""
    if args.nbest is None and not args.print_scores:
        texts = _skip_blank(lines, lambda todo: engine.translate(todo, decode, False), "")
        return "".join(f"{text}\n" for text in texts)
    found = _skip_blank(lines, lambda todo: engine.scored(todo, decode, args.nbest or 1), None)
    if args.nbest is None:
        return "".join(f"{best[0].score:.6f}\t{best[0].text}\n" if best else "0.000000\t\n" for best in found)
    rows = [[(t.score, t.text) for t in hypotheses] if hypotheses else [(0.0, "")] for hypotheses in found]
    return "".join(f"{first + i}\t{score:.6f}\t{text}\n" for i, row in enumerate(rows) for score, text in row)


def cmd_translate(args: argparse.Namespace) -> None:
    """Translate --input (or stdin) --buffer-size lines at a time, writing and flushing each chunk's output."""
    from transformer.model_dir import read_config

    buffer_size = _buffer_size(args)
    check_output(args.output)
    lines = stream_lines(args.input)  # refuses a missing --input now; reads as the chunks ask
    decode = _decode_config(args, read_config(args.model).decode)
    _check_nbest(args.nbest, decode.beam)  # before the model is loaded
    engine = _translator(args)
    out = args.output.open("w", encoding="utf-8") if args.output else sys.stdout
    try:
        first = 0
        for chunk in _chunks(lines, buffer_size):
            out.write(_format_chunk(engine, chunk, decode, args, first))
            out.flush()
            first += len(chunk)
    finally:
        if args.output:
            out.close()


# --------------------------------------------------------------------------------------------- evaluate


def _check_evaluate_args(args: argparse.Namespace) -> None:
    """One-line errors for the combinations of --model, --src, --ref and --hyp that say nothing to score."""
    if args.hyp is not None:
        if args.ref is None:
            raise ValueError(f"--hyp {args.hyp} needs --ref R: the reference translations to score it against")
        if args.model is not None or args.src is not None:
            raise ValueError("--hyp scores existing translations without a model; drop --model and --src, or drop "
                             "--hyp to translate --src with --model")
        if args.output is not None:
            raise ValueError(f"--output {args.output} writes translations, and --hyp has them already; drop --output")
    elif args.src is not None and args.ref is None:
        raise ValueError(f"--src {args.src} needs --ref R: the reference translations of its lines")
    elif args.ref is not None and args.src is None:
        raise ValueError(f"--ref {args.ref} needs --src F (translate F with --model, then score it) or --hyp H "
                         "(score existing translations H)")
    elif args.model is None:
        raise ValueError("evaluate needs --model DIR, or --hyp H --ref R to score existing translations")


def _aligned(flag: str, path: Path, ref: Path, limit: int | None) -> tuple[list[str], list[str]]:
    """The lines of `path` (a file or -, given as `flag`) and of --ref `ref`, which must be as many; the first
    `limit` of each."""
    from transformer.data.corpora import read_lines

    lines, refs = input_lines(path), read_lines(ref)
    if len(lines) != len(refs):
        raise ValueError(f"{flag} {path} has {len(lines)} lines but --ref {ref} has {len(refs)}; they must be "
                         "aligned line by line (same count)")
    return lines[:limit], refs[:limit]


def _print_metrics(hyps: list[str], refs: list[str]) -> tuple[float, float]:
    """Print BLEU and chrF with their sacrebleu signatures; return both scores."""
    from transformer.evaluation.metrics import corpus_bleu, corpus_chrf

    bleu, chrf = corpus_bleu(hyps, refs), corpus_chrf(hyps, refs)
    print(f"{bleu.detail}\n  signature: {bleu.signature}")
    print(f"{chrf.detail}\n  signature: {chrf.signature}")
    return bleu.score, chrf.score


def _score_translations(args: argparse.Namespace, engine: _Engine, src: list[str], refs: list[str],
                        where: dict[str, str]) -> None:
    """Translate `src` (blank lines stay blank), write --output, print BLEU and chrF against `refs`, then
    one JSON line with `where` (the split, or the files) in it."""
    decode = _decode_config(args, engine.config.decode)
    started = time.perf_counter()
    hyps = _skip_blank(src, lambda todo: engine.translate(todo, decode, True), "")
    seconds = time.perf_counter() - started
    if args.output:
        args.output.write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    bleu, chrf = _print_metrics(hyps, refs)
    print(f"decoded {len(hyps)} segments in {seconds:.1f} s (beam {decode.beam}, alpha {decode.alpha})")
    print(json.dumps({"bleu": round(bleu, 2), "chrf": round(chrf, 2), "n": len(hyps), "beam": decode.beam,
                      **where, "decode_seconds": round(seconds, 1)}))


def _evaluate_split(args: argparse.Namespace) -> None:
    from transformer.data.datasets import load_split

    engine = _translator(args, args.weights)
    corpus = load_split(engine.config.data, args.split)
    if corpus is None:
        raise ValueError(f"the model's data config names no {args.split} split; set data.{args.split}_src/_tgt")
    _score_translations(args, engine, corpus.src[: args.limit], corpus.tgt[: args.limit], {"split": args.split})


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Score existing translations (--hyp/--ref), a model's translations of --src against --ref, or a model on a
    held-out split of its data config (whatever its task)."""
    from transformer.model_dir import read_config

    _check_evaluate_args(args)
    if args.hyp is not None:
        hyps, refs = _aligned("--hyp", args.hyp, args.ref, args.limit)
        bleu, chrf = _print_metrics(hyps, refs)
        print(json.dumps({"bleu": round(bleu, 2), "chrf": round(chrf, 2), "n": len(hyps), "hyp": str(args.hyp),
                          "ref": str(args.ref)}))
        return None
    check_output(args.output)
    if args.src is not None:
        src, refs = _aligned("--src", args.src, args.ref, args.limit)
        return _score_translations(args, _translator(args, args.weights), src, refs,
                                   {"src": str(args.src), "ref": str(args.ref)})
    task = read_config(args.model).task
    if task != "translation" and args.engine != "torch":
        raise ValueError(f"--engine {args.engine} translates; a model for task {task!r} is evaluated with "
                         "--engine torch")
    if task in ("lm", "mlm"):
        return evaluate_lm(args)
    if task == "image":
        return evaluate_image(args)
    if task == "classify":
        return evaluate_classify(args)
    return _evaluate_split(args)
