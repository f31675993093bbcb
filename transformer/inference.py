"""Load a model directory and translate text with it (greedy or beam search)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from torch import nn
from tqdm import tqdm

from transformer.config import DecodeConfig, RunConfig
from transformer.data.batching import pad_ids
from transformer.data.tokenizer import Tokenizer
from transformer.decoding import Hypothesis, beam_search, greedy_search
from transformer.model_dir import TOKENIZER_FILE, WEIGHTS_FILE, inside, load_weights, read_config
from transformer.models import EncoderDecoder, build_model
from transformer.nn.packed import pack_inference_weights

logger = logging.getLogger(__name__)


def load_model_dir(
    model_dir: str | Path, weights: str = WEIGHTS_FILE, *, for_decoding: bool = False
) -> tuple[nn.Module, Tokenizer | None, RunConfig]:
    """The model (in eval mode), its tokenizer and its resolved config, from a directory `train` or
    `import-hf` wrote. The tokenizer's special ids are the model's (config.yaml); an image model has none.

    `for_decoding=True` also packs the model's inference weights (`pack_inference_weights`: faster decoding,
    read-only, shared by concurrent searches); leave it off for a model that will be trained or exported."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    m = config.model
    tokenizer = None if config.task == "image" else Tokenizer.load(  # an image model reads pixels
        model_dir / TOKENIZER_FILE, pad_id=m.pad_id, bos_id=m.bos_id, eos_id=m.eos_id)
    model = build_model(config.model)
    load_weights(model, inside(model_dir, weights, "weights file"))
    if for_decoding:
        pack_inference_weights(model)
    return model.eval(), tokenizer, config


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
    encoded = tokenizer.encode_batch(list(lines), add_special_tokens=True, max_len=max_src_len)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    results: list[str] = [""] * len(encoded)
    pad, bos, eos = tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id
    bar = tqdm(total=len(order), desc="translate", unit="seg", disable=not progress, leave=False)
    for start in range(0, len(order), decode.batch_size):
        chunk = order[start : start + decode.batch_size]
        src = pad_ids([encoded[i] for i in chunk], pad)  # (B, S)
        args = dict(pad_id=pad, bos_id=bos, eos_id=eos, max_len_a=decode.max_len_a, max_len_b=decode.max_len_b)
        if decode.beam == 1:
            outputs = greedy_search(model, src, **args)
        else:
            hypotheses = beam_search(model, src, beam_size=decode.beam, alpha=decode.alpha, **args)
            outputs = [_best_tokens(best, i) for i, best in zip(chunk, hypotheses, strict=True)]
        for i, ids in zip(chunk, outputs, strict=True):
            results[i] = tokenizer.decode(ids)
        bar.update(len(chunk))
    bar.close()
    return results


def _best_tokens(hypotheses: list[Hypothesis], line: int) -> list[int]:
    """The best hypothesis's tokens; none (an empty line, with a warning) when beam search found no finite
    hypothesis, which a model that puts -inf on every allowed token can cause."""
    if hypotheses:
        return hypotheses[0].tokens
    logger.warning("beam search found no hypothesis for line %d (counted from 1); writing an empty line", line + 1)
    return []
