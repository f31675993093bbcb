"""The Bible de→en models the translation and bottleneck experiments share: trained by `transformer train`'s loop
from the committed configs (the Transformer's configs/bible-de-en.yaml, the LSTM's configs/bible-de-en-lstm.yaml),
each for a number of CPU minutes, then scored on the test books with beam search.

A run lives in runs/experiments/models/KEY-MINUTES (a --quick run: OUT/models/, on a small slice of the corpus).
A run stopped at any moment resumes (`train --resume`); its test translations are saved beside it
(experiment-test.json), so an experiment started again neither retrains nor re-decodes. The 60-minute
Transformer is the recipe's own run when runs/bible-de-en holds a finished one (docs/RESULTS.md's command).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from transformer.experiments.base import Context
from transformer.safe_files import atomic_write_text

logger = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# model key -> (config file, overrides)
MODELS: dict[str, tuple[str, list[str]]] = {
    "transformer": ("bible-de-en.yaml", []),
    "lstm-attention": ("bible-de-en-lstm.yaml", ["model.rnn_attention=additive"]),
    "lstm": ("bible-de-en-lstm.yaml", ["model.rnn_attention=none"]),
}
LABELS = {"transformer": "Transformer", "lstm-attention": "LSTM + attention", "lstm": "LSTM, no attention"}
RECIPE_RUN = Path("runs/bible-de-en")  # where docs/RESULTS.md trains configs/bible-de-en.yaml for 60 minutes
TEST_FILE = "experiment-test.json"


def _quick_tree(key: str, corpus: Path) -> dict[str, Any]:
    """A tiny model of the same kind on the quick corpus, for a few updates."""
    files = {f"{split}_{side}": str(corpus / f"{split}.{side}") for split in ("train", "valid", "test")
             for side in ("src", "tgt")}
    model = ({"preset": "tiny"} if key == "transformer" else
             {"type": "lstm", "d_model": 32, "n_encoder_layers": 1, "n_decoder_layers": 1,
              "rnn_attention": "additive" if key == "lstm-attention" else "none"})
    return {"model": model, "data": {"corpus": "files", "vocab_size": 300, "min_frequency": 1, **files},
            "train": {"max_steps": 2, "max_tokens": 512, "eval_every": 2, "warmup": 2, "eval_limit": 4},
            "decode": {"beam": 2, "batch_size": 16, "max_len_b": 8}}


def _quick_corpus(root: Path) -> Path:
    """The first pairs of the Bible's de→en splits, as files (a --quick run)."""
    from transformer.data.corpora import load_bible

    corpus = root / "quick-corpus"
    if not (corpus / "test.tgt").is_file():
        corpus.mkdir(parents=True, exist_ok=True)
        for split, n in (("train", 200), ("valid", 8), ("test", 24)):
            pairs = load_bible("e", "2", split)
            atomic_write_text(corpus / f"{split}.src", "\n".join(pairs.src[:n]) + "\n")
            atomic_write_text(corpus / f"{split}.tgt", "\n".join(pairs.tgt[:n]) + "\n")
    return corpus


def run_config(ctx: Context, key: str, minutes: int):
    from transformer.config import RunConfig

    if ctx.quick:
        return RunConfig.from_dict(_quick_tree(key, _quick_corpus(ctx.out.parent)))
    config_file, overrides = MODELS[key]
    path = CONFIGS / config_file
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `transformer experiment` from a checkout of the repository")
    return RunConfig.load(str(path), [*overrides, f"train.max_minutes={minutes}"])


def finished_progress(directory: Path) -> dict[str, Any] | None:
    """The progress record of a run whose training ended (its train_state.pt says so), else None."""
    import torch

    state = directory / "train_state.pt"
    if not state.is_file():
        return None
    progress = torch.load(state, weights_only=True, map_location="cpu")["extra"].get("progress", {})
    return progress if progress.get("finished") else None


def _is_recipe_run(directory: Path, minutes: int) -> bool:
    """Whether `directory` holds a finished run of configs/bible-de-en.yaml's Transformer for `minutes`."""
    from transformer.model_dir import read_config

    if not (directory / "config.yaml").is_file() or finished_progress(directory) is None:
        return False
    config = read_config(directory)
    return (config.model.type == "encoder_decoder" and config.train.max_minutes == minutes
            and (config.data.corpus, config.data.src, config.data.tgt) == ("bible", "e", "2"))


def run_dir(ctx: Context, key: str, minutes: int) -> Path:
    if ctx.quick:
        return ctx.out.parent / "models" / f"{key}-{minutes}"
    if key == "transformer" and minutes == 60 and _is_recipe_run(RECIPE_RUN, minutes):
        return RECIPE_RUN  # the recipe's own 60-minute run, when it has been trained here
    return Path("runs/experiments/models") / f"{key}-{minutes}"


def trained_and_tested(ctx: Context, key: str, minutes: int) -> dict[str, Any]:
    """Train (or resume) the run, translate the test split with its config's beam search, and return
    {sources, references, hypotheses, bleu, chrf, steps, minutes}; saved in the run's directory."""
    from transformer.data.datasets import load_split
    from transformer.evaluation.metrics import corpus_bleu, corpus_chrf
    from transformer.inference import load_model_dir, translate
    from transformer.training.trainer import train

    directory = run_dir(ctx, key, minutes)
    saved = directory / TEST_FILE
    if saved.is_file():
        return json.loads(saved.read_text())
    done = finished_progress(directory)
    if done is None:
        logger.info("training %s for %d minutes into %s", key, minutes, directory)
        resume = (directory / "train_state.pt").is_file()
        done = vars(train(run_config(ctx, key, minutes), directory, resume=resume, progress_bar=ctx.progress))
    model, tokenizer, config = load_model_dir(directory, for_decoding=True)
    test = load_split(config.data, "test")
    hypotheses = translate(model, tokenizer, test.src, config.decode, config.data.max_len, progress=ctx.progress)
    record = {"model": key, "minutes": minutes, "steps": done["step"], "parameters": model.num_parameters(),
              "bleu": round(corpus_bleu(hypotheses, test.tgt).score, 2),
              "chrf": round(corpus_chrf(hypotheses, test.tgt).score, 2), "beam": config.decode.beam,
              "sources": list(test.src), "references": list(test.tgt), "hypotheses": hypotheses}
    atomic_write_text(saved, json.dumps(record, ensure_ascii=False) + "\n")
    return record


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """A run's record without its sentences (what an experiment's part keeps)."""
    return {k: v for k, v in record.items() if k not in ("sources", "references", "hypotheses")}
