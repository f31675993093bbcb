"""Dummy models for the decoding tests.

ScriptedModel implements the decoding protocol with next-token probabilities taken from a Python table,
so a test can compute every expected hypothesis and score by hand. Its cache holds the token history and
the model reads the prefix *from the cache*, so a cache that is not reordered with the beams yields wrong
prefixes (and wrong results); every reorder is also logged. It refuses to expand a prefix holding EOS.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import torch
from torch import Tensor, nn

from transformer.config import ModelConfig
from transformer.models import EncoderDecoder, build_model

PAD, BOS, EOS, A, B, C = 0, 1, 2, 3, 4, 5
VOCAB = 6

# (source without padding, generated prefix without BOS) -> {token: probability}; unlisted tokens get 0.
Table = Callable[[tuple[int, ...], tuple[int, ...]], dict[int, float]]


def fixed(rows: dict[tuple[int, ...], dict[int, float]]) -> Table:
    """A table that ignores the source; expanding a prefix not listed fails the test with a KeyError."""
    return lambda source, prefix: rows[prefix]


def random_table(seed: int, vocab: int = VOCAB) -> Table:
    """Every token, PAD and BOS included, gets a random non-zero probability depending on the prefix."""

    def probs(source: tuple[int, ...], prefix: tuple[int, ...]) -> dict[int, float]:
        rng = random.Random(hash((seed, source, prefix)))
        weights = [math.exp(2.0 * rng.gauss(0.0, 1.0)) for _ in range(vocab)]
        total = sum(weights)
        return {token: w / total for token, w in enumerate(weights)}

    return probs


class ScriptedCache:
    def __init__(self, tokens: Tensor, log: list[list[int]]):
        self.tokens = tokens  # (B, T) every token seen so far, BOS first
        self.log = log

    def reorder(self, index: Tensor) -> ScriptedCache:
        self.log.append(index.tolist())
        return ScriptedCache(self.tokens.index_select(0, index), self.log)


class ScriptedModel(nn.Module):
    def __init__(self, table: Table, vocab_size: int = VOCAB, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.table, self.vocab_size, self.dtype = table, vocab_size, dtype
        self.encode_calls: list[list[list[int]]] = []
        self.step_calls: list[tuple[tuple[int, ...], bool]] = []  # (tokens shape, cache given)
        self.modes: list[tuple[bool, bool]] = []  # (training, inference mode) at every call
        self.reorders: list[list[int]] = []
        self.expanded: list[tuple[tuple[int, ...], tuple[int, ...]]] = []  # (source, prefix) asked for

    def encode(self, src: Tensor, src_mask: Tensor) -> Tensor:
        self.encode_calls.append(src.tolist())
        self.modes.append((self.training, torch.is_inference_mode_enabled()))
        return src.float()[:, :, None]  # (B, S, 1): the source ids, so decode_step can recover them

    def decode_step(
        self, tokens: Tensor, memory: Tensor, src_mask: Tensor, cache: ScriptedCache | None
    ) -> tuple[Tensor, ScriptedCache]:
        self.step_calls.append((tuple(tokens.shape), cache is not None))
        self.modes.append((self.training, torch.is_inference_mode_enabled()))
        full = tokens if cache is None else torch.cat([cache.tokens, tokens], dim=1)  # (B, T)
        new = tokens.size(1)
        logits = torch.full((tokens.size(0), new, self.vocab_size), float("-inf"))  # (B, t, V)
        for row in range(tokens.size(0)):
            ids, keep = memory[row, :, 0].tolist(), src_mask[row].reshape(-1).tolist()
            source = tuple(int(i) for i, k in zip(ids, keep, strict=True) if k)
            for j in range(new):
                position = full.size(1) - new + j
                prefix = tuple(full[row, 1 : position + 1].tolist())
                logits[row, j] = self._logits(source, prefix)
        return logits.to(self.dtype), ScriptedCache(full, self.reorders)

    def logits_for(self, source: tuple[int, ...], prefix: tuple[int, ...]) -> Tensor:
        """The logits decode_step returns for this prefix, without logging the call."""
        return self._scripted(source, prefix).to(self.dtype)

    def _logits(self, source: tuple[int, ...], prefix: tuple[int, ...]) -> Tensor:
        if PAD in prefix:  # a dead beam (log-prob -inf): whatever it predicts cannot matter
            return torch.zeros(self.vocab_size)
        assert EOS not in prefix, f"expanded a finished hypothesis {prefix}"
        self.expanded.append((source, prefix))
        return self._scripted(source, prefix)

    def _scripted(self, source: tuple[int, ...], prefix: tuple[int, ...]) -> Tensor:
        out = torch.full((self.vocab_size,), float("-inf"))
        for token, p in self.table(source, prefix).items():
            out[token] = math.log(p)
        return out


def tiny_transformer(vocab: int = 12, seed: int = 0) -> EncoderDecoder:
    """A random 2-layer EncoderDecoder whose outputs vary (sharpened, untied logits) and often end early."""
    torch.manual_seed(seed)
    config = ModelConfig.preset(
        "tiny", src_vocab_size=vocab, tgt_vocab_size=vocab, d_model=32, d_ff=64, dropout=0.3,
        tie_output=False, pad_id=PAD, bos_id=BOS, eos_id=EOS,
    )
    model = build_model(config)
    with torch.no_grad():
        model.output_proj.weight.mul_(4.0)
    return model.train()  # dropout on: decoding must switch to eval() itself
