"""Load a model directory and translate text with it (greedy or beam search)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from transformer.config import DecodeConfig, RunConfig
from transformer.data.batching import pad_ids
from transformer.data.tokenizer import Tokenizer
from transformer.decoding import Hypothesis, beam_search, greedy_search
from transformer.decoding.greedy import greedy_search_scored
from transformer.devices import model_device, resolve_device
from transformer.model_dir import TOKENIZER_FILE, WEIGHTS_FILE, inside, load_weights, read_config
from transformer.models import EncoderDecoder, build_model
from transformer.nn.packed import pack_inference_weights

logger = logging.getLogger(__name__)


def load_model_dir(
    model_dir: str | Path, weights: str = WEIGHTS_FILE, *, for_decoding: bool = False, device: str | None = None
) -> tuple[nn.Module, Tokenizer | None, RunConfig]:
    """The model (in eval mode), its tokenizer and its resolved config, from a directory `train` or
    `import-hf` wrote. The tokenizer's special ids are the model's (config.yaml); an image model has none.

    `for_decoding=True` also packs the model's inference weights (`pack_inference_weights`: faster decoding,
    read-only, shared by concurrent searches; the CPU only); leave it off for a model that will be trained or
    exported. `device` (a --device value, devices.py; default: the CPU) is where the model is put."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    m = config.model
    tokenizer = None if config.task == "image" else Tokenizer.load(  # an image model reads pixels
        model_dir / TOKENIZER_FILE, pad_id=m.pad_id, bos_id=m.bos_id, eos_id=m.eos_id)
    if tokenizer is not None:
        _check_vocabulary(tokenizer, config, model_dir)
    model = build_model(config.model)
    load_weights(model, inside(model_dir, weights, "weights file"))
    target = torch.device("cpu") if device is None else resolve_device(device)
    if target.type != "cpu":
        model.to(target)
    elif for_decoding:
        pack_inference_weights(model)  # oneDNN's packed weights are a CPU speed-up
    return model.eval(), tokenizer, config


def _check_vocabulary(tokenizer: Tokenizer, config: RunConfig, model_dir: Path) -> None:
    """Refuse a tokenizer that makes ids the model has no embedding for (a tokenizer.json of another run): it
    would otherwise load and translate wrongly until such an id turned up. A smaller one is fine (padded
    vocabularies of imported models)."""
    m = config.model
    sides = [("target", tokenizer.target_vocab_size, "tgt_vocab_size", m.tgt_vocab_size)]
    if not m.single_stack:
        sides.insert(0, ("source", tokenizer.vocab_size, "src_vocab_size", m.src_vocab_size))
    for side, tokens, key, size in sides:
        if tokens > size:
            raise ValueError(f"{model_dir / TOKENIZER_FILE} has {tokens} {side} tokens, but the model's "
                             f"model.{key} is {size} (config.yaml): ids {size}..{tokens - 1} have no embedding, so "
                             "this is not the tokenizer the model was trained with; use that run's tokenizer.json")


@dataclass(frozen=True)
class Translation:
    """One hypothesis for a line: its text and its score, by which the search ranked it (beam search: the
    log-probability divided by the length penalty; greedy search: the sum of the token log-probabilities)."""

    text: str
    score: float
    tokens: tuple[int, ...] = field(default=(), compare=False)  # the search's ids (for attention maps)


def translate(
    model: EncoderDecoder,
    tokenizer: Tokenizer,
    lines: Sequence[str],
    decode: DecodeConfig,
    max_src_len: int | None = None,
    progress: bool = False,
) -> list[str]:
    """Translate each line; batches are formed from length-sorted lines, the output keeps the input order.

    Sources get the tokenizer's special tokens (none for ours; </s> appended for Marian, <s> ... </s> for
    BART), and at most `max_src_len` ids each.
    """
    results: list[str] = [""] * len(lines)
    pad, bos, eos = tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id
    args = dict(pad_id=pad, bos_id=bos, eos_id=eos, max_len_a=decode.max_len_a, max_len_b=decode.max_len_b)
    for chunk, src in _batches(tokenizer, lines, decode, max_src_len, progress):
        src = src.to(model_device(model))
        if decode.beam == 1:
            outputs = greedy_search(model, src, **args)
        else:
            hypotheses = beam_search(model, src, beam_size=decode.beam, alpha=decode.alpha, **args)
            outputs = [_best_tokens(best, i) for i, best in zip(chunk, hypotheses, strict=True)]
        for i, ids in zip(chunk, outputs, strict=True):
            results[i] = tokenizer.decode(ids)
    return results


def translate_scored(
    model: EncoderDecoder,
    tokenizer: Tokenizer,
    lines: Sequence[str],
    decode: DecodeConfig,
    max_src_len: int | None = None,
    n_best: int = 1,
    progress: bool = False,
) -> list[list[Translation]]:
    """As `translate`, with scores: the `n_best` best hypotheses of each line, best first (n_best <= decode.beam;
    beam search may find fewer). Where it found none, the line gets one empty translation scoring -inf."""
    if not 1 <= n_best <= decode.beam:
        raise ValueError(f"n_best={n_best} must be between 1 and the beam size {decode.beam}; raise the beam or "
                         "lower n_best")
    results: list[list[Translation]] = [[] for _ in lines]
    pad, bos, eos = tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id
    args = dict(pad_id=pad, bos_id=bos, eos_id=eos, max_len_a=decode.max_len_a, max_len_b=decode.max_len_b)
    for chunk, src in _batches(tokenizer, lines, decode, max_src_len, progress):
        src = src.to(model_device(model))
        if decode.beam == 1:
            found = [[h] for h in greedy_search_scored(model, src, **args)]
        else:
            found = beam_search(model, src, beam_size=decode.beam, alpha=decode.alpha, n_best=n_best, **args)
        for i, hypotheses in zip(chunk, found, strict=True):
            if not hypotheses:
                _warn_no_hypothesis(i)
                hypotheses = [Hypothesis([], float("-inf"), float("-inf"))]
            results[i] = [Translation(tokenizer.decode(h.tokens), h.score, tuple(h.tokens)) for h in hypotheses]
    return results


def _batches(
    tokenizer: Tokenizer, lines: Sequence[str], decode: DecodeConfig, max_src_len: int | None, progress: bool
) -> Iterator[tuple[list[int], Tensor]]:
    """The lines, after decode.prefix (T5's task prefix), encoded and sorted by length, in batches of
    decode.batch_size: (the lines' indices, their padded ids (B, S))."""
    lines = [decode.prefix + line for line in lines] if decode.prefix else list(lines)
    encoded = tokenizer.encode_batch(lines, add_special_tokens=True, max_len=max_src_len)
    batch_size = decode.batch_size
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    with tqdm(total=len(order), desc="translate", unit="seg", disable=not progress, leave=False) as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            yield chunk, pad_ids([encoded[i] for i in chunk], tokenizer.pad_id)  # (B, S)
            bar.update(len(chunk))


def _best_tokens(hypotheses: list[Hypothesis], line: int) -> list[int]:
    """The best hypothesis's tokens; none (an empty line, with a warning) when beam search found no finite
    hypothesis, which a model that puts -inf on every allowed token can cause."""
    if hypotheses:
        return hypotheses[0].tokens
    _warn_no_hypothesis(line)
    return []


def _warn_no_hypothesis(line: int) -> None:
    logger.warning("beam search found no hypothesis for line %d (counted from 1); writing an empty line", line + 1)
