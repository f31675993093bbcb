"""How a joint byte-level BPE treats each source language of the Bible corpus, paired with English.

usage: python bench/tokenization.py [--sources e,r,c] [--target 2] [--vocab 8000,16000] [--max-len 256]
                                   [--no-split-han]
       python bench/tokenization.py --lengths [--sources e,r,c,k] [--books 9,20]

For each source and vocabulary size, a joint BPE is trained on the training split's sources and targets
exactly as `transformer train` trains it (`train_bpe`, min frequency 2), and the test split is encoded.
Printed per row: how many vocabulary entries hold non-ASCII text (the share the non-Latin side takes), the
mean source and target tokens per verse, source tokens per whitespace-separated word, and how many training
pairs have a side over --max-len tokens (the pairs `encode_corpus` drops). The last line is one JSON object.

--lengths measures, without any model, how closely each source follows the English verse by verse: the
Pearson correlation of log character lengths of the aligned verses (train and test splits, and the --books
given, by database book number: 9 = 1 Samuel, 20 = Proverbs), and the share of pairs whose length ratio is
more than 1.8x off the split's median ratio (an added or missing sentence). King James 1611 (`k`) against
King James 2000 is the near-identical reference point.
Used for the Russian and Chinese runs of docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

from tokenizers import decoders

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit_json  # noqa: E402

from transformer.data.corpora import load_bible, load_bible_book  # noqa: E402
from transformer.data.tokenizer import train_bpe  # noqa: E402


def tokenization_figures(source: str, target: str, vocab_size: int, max_len: int, split_han: bool) -> dict:
    train, test = load_bible(source, target, "train"), load_bible(source, target, "test")
    tokenizer = train_bpe(list(train.src) + list(train.tgt), vocab_size=vocab_size, split_han=split_han)
    byte_level = decoders.ByteLevel()
    vocabulary = tokenizer.hf_tokenizer.get_vocab()
    non_ascii = sum(1 for token in vocabulary if any(ord(c) >= 128 for c in byte_level.decode([token])))
    src = [len(ids) for ids in tokenizer.encode_batch(list(test.src))]
    tgt = [len(ids) for ids in tokenizer.encode_batch(list(test.tgt))]
    words = sum(len(line.split()) for line in test.src)
    train_src = [len(ids) for ids in tokenizer.encode_batch(list(train.src))]
    train_tgt = [len(ids) for ids in tokenizer.encode_batch(list(train.tgt))]
    return {
        "source": source, "split_han": split_han,
        "vocab": vocab_size, "non_ascii_tokens": non_ascii, "vocab_entries": len(vocabulary),
        "src_tokens_per_verse": round(statistics.mean(src), 1), "tgt_tokens_per_verse": round(statistics.mean(tgt), 1),
        "src_tokens_per_word": round(sum(src) / max(words, 1), 2),
        "train_pairs_over_max_len": sum(1 for s, t in zip(train_src, train_tgt, strict=True) if max(s, t) > max_len),
        "longest_train_side": max(max(train_src), max(train_tgt)),
    }


def length_agreement(src: list[str], tgt: list[str]) -> dict:
    """Correlation of log character lengths, and the share of pairs > 1.8x off the median length ratio."""
    src_log = [math.log(len(line) + 1) for line in src]
    tgt_log = [math.log(len(line) + 1) for line in tgt]
    ratios = [s - t for s, t in zip(src_log, tgt_log, strict=True)]
    median = statistics.median(ratios)
    off = sum(1 for r in ratios if abs(r - median) > math.log(1.8))
    return {"r": round(statistics.correlation(src_log, tgt_log), 3), "off_1.8x": off, "pairs": len(src)}


def length_figures(source: str, target: str, books: list[int]) -> dict:
    row: dict = {"source": source}
    for split in ("train", "test"):
        corpus = load_bible(source, target, split)
        row[split] = length_agreement(list(corpus.src), list(corpus.tgt))
    for book in books:
        corpus = load_bible_book(source, target, book)
        row[f"book_{book}"] = length_agreement(list(corpus.src), list(corpus.tgt))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", default="e,r,c", help="comma-separated corpus codes (default e,r,c)")
    parser.add_argument("--target", default="2", help="target corpus code (default 2, King James 2000)")
    parser.add_argument("--vocab", default="8000", help="comma-separated vocabulary sizes (default 8000)")
    parser.add_argument("--max-len", type=int, default=256, help="the config's data.max_len (default 256)")
    parser.add_argument("--no-split-han", action="store_true", help="BPE without data.split_han (the old default)")
    parser.add_argument("--lengths", action="store_true", help="verse-length agreement with the target instead")
    parser.add_argument("--books", default="9,20", help="with --lengths: database book numbers (default 9,20)")
    args = parser.parse_args()
    rows = []
    if args.lengths:
        for source in args.sources.split(","):
            rows.append(length_figures(source, args.target, [int(b) for b in args.books.split(",") if b]))
            print(" ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
        emit_json({"rows": rows})
        return
    for vocab_size in (int(v) for v in args.vocab.split(",")):
        for source in args.sources.split(","):
            row = tokenization_figures(source, args.target, vocab_size, args.max_len, not args.no_split_han)
            rows.append(row)
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    emit_json({"rows": rows})


if __name__ == "__main__":
    main()
