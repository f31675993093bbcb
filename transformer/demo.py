"""`make demo`: train German -> English on the Bible, score the held-out books with BLEU, translate a few lines.

usage: python -m transformer.demo [--config configs/bible-de-en-demo.yaml] [--out runs/demo] [--set a.b=c ...]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from transformer.cli import main as cli

EXAMPLES = [
    "Im Anfang war das Wort, und das Wort war bei Gott.",
    "Und Gott sprach: Es werde Licht! und es ward Licht.",
    "Der Herr ist mein Hirte, mir wird nichts mangeln.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/bible-de-en-demo.yaml")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=C")
    parser.add_argument("--limit", type=int, help="score only the first N test verses")
    args = parser.parse_args(argv)

    if args.out.exists():
        print(f"== removing the previous demo run in {args.out}")
        shutil.rmtree(args.out)
    print(f"== 1/3 training {args.config} -> {args.out} (the budget is in the config's train.max_minutes)")
    overrides = [arg for item in args.overrides for arg in ("--set", item)]
    if code := cli(["train", args.config, "--out", str(args.out), *overrides]):
        return code
    print("== 2/3 scoring the held-out test books (Judges, 1 Samuel, Philippians, Hebrews) with sacrebleu")
    limit = ["--limit", str(args.limit)] if args.limit else []
    if code := cli(["evaluate", "--model", str(args.out), "--split", "test", *limit]):
        return code
    print("== 3/3 translating three German sentences")
    examples = args.out / "examples.de"
    examples.write_text("\n".join(EXAMPLES) + "\n", encoding="utf-8")
    translations = args.out / "examples.en"
    if code := cli(["translate", "--model", str(args.out), "--input", str(examples), "--output", str(translations)]):
        return code
    for source, target in zip(EXAMPLES, translations.read_text(encoding="utf-8").splitlines(), strict=True):
        print(f"  de: {source}\n  en: {target}")
    print(f"== loss curve: {args.out / 'loss.png'}; metrics: {args.out / 'metrics.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
