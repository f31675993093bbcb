"""`transformer experiment NAME [--quick] [--out DIR]`: run (or resume) one of the experiments of
transformer/experiments, or `all` of them in order; a full run into docs/experiments rewrites docs/EXPERIMENTS.md."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EXPERIMENT_NAMES = ("order", "long-range", "vanishing-gradients", "bottleneck", "parallel", "translation",
                    "positions", "activations")  # transformer.experiments.EXPERIMENTS (a test keeps them equal)


def _minutes(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"--minutes {text!r}: give positive whole minutes, e.g. 15,60")
    return values


def add_experiment_command(commands: argparse._SubParsersAction) -> None:
    experiment = commands.add_parser(
        "experiment", help="measure a claim about what came before the Transformer (bag of words, RNN, LSTM, "
                           "seq2seq with attention): writes a table, a plot and result.json (docs/EXPERIMENTS.md)")
    experiment.add_argument("name", choices=(*EXPERIMENT_NAMES, "all"),
                            help="the experiment, or 'all' of them in order (each resumes where it stopped)")
    experiment.add_argument("--quick", action="store_true",
                            help="toy sizes, seconds per experiment (what the tests run); numbers mean nothing")
    experiment.add_argument("--out", type=Path, default=Path("runs/experiments"),
                            help="results go to OUT/NAME (default runs/experiments); a full run with --out "
                                 "docs/experiments regenerates the committed results and docs/EXPERIMENTS.md")
    experiment.add_argument("--minutes", type=_minutes, default=(15, 60),
                            help="translation: the CPU-minute budgets to compare, comma-separated (default 15,60)")
    experiment.add_argument("--no-progress", action="store_true", help="no progress bars (one log line per part)")


def cmd_experiment(args: argparse.Namespace) -> None:
    from transformer.experiments import EXPERIMENTS, run_experiment
    from transformer.experiments.report import is_committed_dir, write_report

    committed = is_committed_dir(args.out)
    if committed and args.quick:
        raise ValueError("--quick results never go to docs/experiments (it holds the full runs' results); use "
                         "--out runs/experiments, or drop --quick")
    names = list(EXPERIMENTS) if args.name == "all" else [args.name]
    for name in names:
        experiment = EXPERIMENTS[name]()
        options = ""
        if name == "translation":
            experiment.budgets = args.minutes
            options = "" if args.minutes == (15, 60) else f"--minutes {','.join(map(str, args.minutes))}"
        result = run_experiment(experiment, args.out, quick=args.quick, progress=not args.no_progress,
                                options=options)
        print(f"{name}: wrote {args.out / name} (result.json, table.md, plot.png)")
        print(json.dumps({"experiment": name, "out": str(args.out / name), "rows": len(result["rows"]),
                          "seconds": result["seconds"]}))
        if committed:
            print(f"rewrote {write_report(EXPERIMENTS)}")
