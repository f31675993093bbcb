"""`transformer prepare CONFIG --out DIR`: tokenize a translation corpus once into a cache that training reads
with `data.corpus: prepared` (transformer/data/prepared.py)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_prepare_command(commands: argparse._SubParsersAction) -> None:
    prepare = commands.add_parser(
        "prepare", help="tokenize a translation corpus once into a cache of token ids (numpy memmaps) that "
                        "`train` reads with --set data.corpus=prepared --set data.prepared=DIR")
    prepare.add_argument("config", help="YAML config whose data section names the corpus (bible, files or tsv) "
                                        "and the tokenizer (vocab_size, min_frequency, split_han)")
    prepare.add_argument("--out", required=True, type=Path, help="cache directory to write (new or empty)")
    prepare.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=C",
                         help="override a config value, e.g. --set data.vocab_size=16000 (repeatable)")


def cmd_prepare(args: argparse.Namespace) -> None:
    from transformer.config import RunConfig
    from transformer.data.prepared import prepare

    config = RunConfig.load(args.config, args.overrides)
    start = time.perf_counter()
    manifest = prepare(config.data, args.out)
    splits = manifest["splits"]
    for split, counts in splits.items():
        print(f"{split}: {counts['pairs']} pairs ({counts['dropped_blank']} of {counts['read']} dropped with a "
              "blank side)")
    print(f"wrote {args.out}; train on it with --set data.corpus=prepared --set data.prepared={args.out}")
    print(json.dumps({"out": str(args.out), "pairs": splits["train"]["pairs"], "vocab_size": manifest["vocab_size"],
                      "dtype": manifest["dtype"], "seconds": round(time.perf_counter() - start, 1)}))
