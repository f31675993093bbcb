"""Byte-level BPE subwords (Hugging Face `tokenizers`): any Unicode text round-trips exactly."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

logger = logging.getLogger(__name__)

__all__ = ["SPECIAL_TOKENS", "Tokenizer", "train_bpe"]

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")  # ids 0, 1, 2, 3
_N_BYTES = 256
TOKENIZER_FILE = "tokenizer.json"


def _file(path: str | Path) -> Path:
    """`path` itself if it names a .json file, else `path/tokenizer.json` (a model directory)."""
    path = Path(path)
    return path if path.suffix == ".json" or path.is_file() else path / TOKENIZER_FILE


class Tokenizer:
    """A trained `tokenizers.Tokenizer` with fixed special ids: <pad>=0, <bos>=1, <eos>=2, <unk>=3.

    `encode` adds no special tokens, and text that happens to spell "<eos>" is encoded as plain text.
    """

    def __init__(self, hf_tokenizer: HFTokenizer):
        for expected_id, token in enumerate(SPECIAL_TOKENS):
            found = hf_tokenizer.token_to_id(token)
            if found != expected_id:
                raise ValueError(
                    f"Special token {token} has id {found}, expected {expected_id}; train the tokenizer with "
                    f"train_bpe(), which reserves {list(SPECIAL_TOKENS)} as ids 0..3"
                )
        hf_tokenizer.encode_special_tokens = True  # user text never turns into special ids
        self._hf = hf_tokenizer

    @property
    def hf_tokenizer(self) -> HFTokenizer:
        """The wrapped Hugging Face tokenizer."""
        return self._hf

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def bos_id(self) -> int:
        return 1

    @property
    def eos_id(self) -> int:
        return 2

    @property
    def unk_id(self) -> int:
        return 3

    @property
    def vocab_size(self) -> int:
        return self._hf.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without <bos>/<eos>."""
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` over many texts (parallel in Rust)."""
        return [e.ids for e in self._hf.encode_batch(list(texts), add_special_tokens=False)]

    def _check_ids(self, ids: Any) -> list[int]:
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        size = self.vocab_size
        for i in ids:
            if not 0 <= i < size:
                raise ValueError(f"Token id {i} is outside the vocabulary 0..{size - 1}; "
                                 "was the model trained with another tokenizer?")
        return [int(i) for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`, special ids skipped; bytes of an incomplete character decode to U+FFFD."""
        return self._hf.decode(self._check_ids(ids), skip_special_tokens=True)

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        """`decode` over many id lists."""
        return self._hf.decode_batch([self._check_ids(ids) for ids in batch], skip_special_tokens=True)

    def tokens(self, ids: Sequence[int]) -> list[str]:
        """One readable label per id (for attention plots): each token decoded on its own."""
        return [self._hf.decode([i], skip_special_tokens=False) for i in self._check_ids(ids)]

    def save(self, path: str | Path) -> Path:
        """Write the standard `tokenizer.json` into directory `path` (or to `path` if it ends in .json)."""
        target = _file(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._hf.save(str(target))
        return target

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Read a `tokenizer.json` written by `save` (the file, or a directory holding one)."""
        source = _file(path)
        if not source.is_file():
            raise FileNotFoundError(
                f"No tokenizer file at {source}; pass a tokenizer.json or a model directory holding one"
            )
        return cls(HFTokenizer.from_file(str(source)))


def train_bpe(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE on `texts` (for a joint vocabulary pass sources and targets together)."""
    minimum = _N_BYTES + len(SPECIAL_TOKENS)
    if vocab_size <= minimum:
        raise ValueError(
            f"vocab_size={vocab_size} leaves no room for merges: the 256 byte tokens and "
            f"{len(SPECIAL_TOKENS)} specials take {minimum}; use vocab_size > {minimum} (e.g. 8000)"
        )
    if min_frequency < 1:
        raise ValueError(f"min_frequency={min_frequency} must be at least 1")
    hf = HFTokenizer(models.BPE(unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(texts, trainer)
    tokenizer = Tokenizer(hf)
    if tokenizer.vocab_size < vocab_size:
        logger.info("BPE stopped at %d tokens of the %d asked (no more pairs with frequency >= %d)",
                    tokenizer.vocab_size, vocab_size, min_frequency)
    return tokenizer
