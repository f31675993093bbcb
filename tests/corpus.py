"""A small synthetic parallel corpus on disk (a word-for-word cipher), for end-to-end tests of the loop."""

import random
from pathlib import Path

WORDS = ["haus", "baum", "hund", "katze", "wasser", "licht", "wort", "gott", "erde", "himmel", "mann", "frau"]


def cipher(word: str) -> str:
    return word[::-1] + "o"


def write_corpus(root: Path, n_train: int = 300, n_valid: int = 16, n_test: int = 16, seed: int = 0) -> Path:
    rng = random.Random(seed)
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        src, tgt = [], []
        for _ in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(2, 6))]
            src.append(" ".join(words))
            tgt.append(" ".join(cipher(w) for w in words))
        (root / f"{split}.src").write_text("\n".join(src) + "\n", encoding="utf-8")
        (root / f"{split}.tgt").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return root


def run_config(root: Path, **train) -> dict:
    """A config tree for a tiny model on the corpus in `root`."""
    files = {f"{split}_{side}": str(root / f"{split}.{side}") for split in ("train", "valid", "test")
             for side in ("src", "tgt")}
    return {
        "model": {"preset": "tiny", "dropout": 0.1},
        "data": {"corpus": "files", "vocab_size": 300, "min_frequency": 1, **files},
        "train": {"max_steps": 6, "max_tokens": 256, "eval_every": 3, "log_every": 2, "warmup": 4, "lr": 3e-3,
                  "seed": 1, "eval_limit": 4, **train},
        "decode": {"beam": 2, "batch_size": 8, "max_len_b": 4},
    }


SUBJECTS = ["the man", "a woman", "the king", "his son", "the people"]
VERBS = ["went", "came", "spoke", "sat", "wept"]
PLACES = ["to the city", "into the house", "by the river", "on the mountain", "before the gate"]


def write_text_corpus(root: Path, n_train: int = 300, n_valid: int = 16, n_test: int = 16, seed: int = 0) -> Path:
    """train.txt, valid.txt, test.txt: one short sentence of a tiny grammar a line (a language model's text)."""
    rng = random.Random(seed)
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        lines = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(PLACES)}." for _ in range(n)]
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def lm_config(root: Path, **train) -> dict:
    """A config tree for a tiny decoder-only model on the text corpus in `root`."""
    return {
        "task": "lm",
        "model": {"preset": "tiny", "dropout": 0.1, "positional": "learned", "max_positions": 64},
        "data": {"corpus": "text", "vocab_size": 300, "min_frequency": 1, "max_len": 60,
                 **{f"{split}_text": str(root / f"{split}.txt") for split in ("train", "valid", "test")}},
        "train": {"max_steps": 6, "max_tokens": 256, "eval_every": 3, "log_every": 2, "warmup": 4, "lr": 3e-3,
                  "seed": 1, "label_smoothing": 0.0, **train},
    }


def image_config(**train) -> dict:
    """A config tree for a tiny Vision Transformer on the digits (transformer/data/images.py)."""
    return {
        "task": "image",
        "model": {"d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 2, "dropout": 0.0, "norm_first": True,
                  "image_size": 8, "patch_size": 2, "channels": 1, "n_classes": 10},
        "data": {"corpus": "digits"},
        "train": {"max_steps": 6, "batch_size": 64, "eval_every": 3, "log_every": 2, "warmup": 4, "lr": 3e-3,
                  "seed": 1, **train},
    }


def mlm_config(root: Path, **train) -> dict:
    """A config tree for a tiny BERT-like encoder-only model on the text corpus in `root`."""
    tree = lm_config(root, **train)
    tree["task"] = "mlm"
    tree["model"] |= {"layernorm_embedding": True, "output_bias": True, "scale_embedding": False}
    return tree


VERB_LABELS = {"went": "motion", "came": "motion", "spoke": "speech", "sat": "rest", "wept": "rest"}


def write_labelled_corpus(root: Path, n_train: int = 300, n_valid: int = 30, n_test: int = 30, seed: int = 0) -> Path:
    """train.tsv, valid.tsv, test.tsv: a sentence of the tiny grammar TAB the class of its verb (VERB_LABELS), and
    train.txt, valid.txt, test.txt: the sentences alone (to pretrain on)."""
    rng = random.Random(seed)
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        rows = []
        for _ in range(n):
            verb = rng.choice(VERBS)
            rows.append((f"{rng.choice(SUBJECTS)} {verb} {rng.choice(PLACES)}.", VERB_LABELS[verb]))
        (root / f"{split}.tsv").write_text("".join(f"{text}\t{label}\n" for text, label in rows), encoding="utf-8")
        (root / f"{split}.txt").write_text("".join(f"{text}\n" for text, _ in rows), encoding="utf-8")
    return root


def classify_config(root: Path, **train) -> dict:
    """A config tree for a tiny encoder-only classifier on the labelled corpus in `root`."""
    tree = mlm_config(root, **train)
    tree["task"] = "classify"
    tree["data"] = {"corpus": "tsv", "vocab_size": 300, "min_frequency": 1, "max_len": 60,
                    **{f"{split}_tsv": str(root / f"{split}.tsv") for split in ("train", "valid", "test")}}
    return tree
