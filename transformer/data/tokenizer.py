"""Byte-level BPE subwords (Hugging Face `tokenizers`): any Unicode text round-trips exactly.

`train_bpe` makes our tokenizers, with <pad>=0, <bos>=1, <eos>=2, <unk>=3. A `Tokenizer` also wraps other
`tokenizers` files (models imported by `transformer import-hf`): their special ids are then given explicitly
(`load_model_dir` reads them from config.yaml), and a model directory may hold a second file,
`target_tokenizer.json`, that decodes the target side when it differs from the source side (Marian's
separate SentencePiece models).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from transformer.special_ids import check_special_ids

logger = logging.getLogger(__name__)

__all__ = ["SPECIAL_TOKENS", "Tokenizer", "train_bpe"]

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")  # ids 0, 1, 2, 3
MASK_TOKEN = "<mask>"  # id 4 in the tokenizers of masked-language-model runs (train_bpe(..., mask=True)) only
_N_BYTES = 256
TOKENIZER_FILE = "tokenizer.json"
TARGET_PREFIX = "target_"  # target_tokenizer.json, next to tokenizer.json


def _file(path: str | Path) -> Path:
    """`path` itself if it names a .json file, else `path/tokenizer.json` (a model directory)."""
    path = Path(path)
    return path if path.suffix == ".json" or path.is_file() else path / TOKENIZER_FILE


def _target_file(source: Path) -> Path:
    return source.with_name(TARGET_PREFIX + source.name)


class Tokenizer:
    """A `tokenizers.Tokenizer` and its special ids; ours are <pad>=0, <bos>=1, <eos>=2, <unk>=3.

    `encode` adds no special tokens unless asked, and text that happens to spell "<eos>" is encoded as
    plain text. Without explicit ids the file must be one `train_bpe` made (checked). With explicit
    `pad_id`, `bos_id`, `eos_id` (imported models: Marian has eos 0, pad = bos = vocab - 1), any file
    works; bos_id is the token decoding starts with. `encode*` use the source side, `decode*` the target
    side: `target` when given, else the same tokenizer.
    """

    def __init__(
        self,
        hf_tokenizer: HFTokenizer,
        *,
        pad_id: int | None = None,
        bos_id: int | None = None,
        eos_id: int | None = None,
        target: HFTokenizer | None = None,
    ):
        given = [pad_id, bos_id, eos_id]
        if all(i is None for i in given):
            _check_our_specials(hf_tokenizer)
            pad_id, bos_id, eos_id = 0, 1, 2
        elif any(i is None for i in given):
            raise ValueError(f"give all of pad_id, bos_id, eos_id or none of them, got {pad_id}, {bos_id}, {eos_id}")
        self._hf = hf_tokenizer
        self._target = target if target is not None else hf_tokenizer
        for tokenizer in (self._hf, self._target):
            tokenizer.encode_special_tokens = True  # user text never turns into special ids
        self._pad_id, self._bos_id, self._eos_id = int(pad_id), int(bos_id), int(eos_id)  # type: ignore[arg-type]
        self._check_ids_fit()

    def _check_ids_fit(self) -> None:
        size = min(self.vocab_size, self.target_vocab_size)
        check_special_ids(self._pad_id, self._bos_id, self._eos_id, size,
                          vocabulary=f"the tokenizer's vocabulary of {size} tokens",
                          fix="do config.yaml's model.pad_id/bos_id/eos_id belong to this tokenizer?")

    @property
    def hf_tokenizer(self) -> HFTokenizer:
        """The wrapped Hugging Face tokenizer (the source side)."""
        return self._hf

    @property
    def target_hf_tokenizer(self) -> HFTokenizer:
        """The Hugging Face tokenizer that decodes the target side (the same object unless given apart)."""
        return self._target

    @property
    def pad_id(self) -> int:
        return self._pad_id

    @property
    def bos_id(self) -> int:
        return self._bos_id

    @property
    def eos_id(self) -> int:
        return self._eos_id

    @property
    def unk_id(self) -> int | None:
        """Id of "<unk>" on the source side (3 for ours), None if it has no such token."""
        return self._hf.token_to_id("<unk>")

    @property
    def mask_id(self) -> int | None:
        """The id of <mask> (tokenizers trained for masked language modelling) or of BERT's [MASK], else None."""
        found = self._hf.token_to_id(MASK_TOKEN)
        return self._hf.token_to_id("[MASK]") if found is None else found

    @property
    def vocab_size(self) -> int:
        """Source-side vocabulary size."""
        return self._hf.get_vocab_size(with_added_tokens=True)

    @property
    def target_vocab_size(self) -> int:
        return self._target.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without <bos>/<eos>."""
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(
        self, texts: Sequence[str], add_special_tokens: bool = False, max_len: int | None = None
    ) -> list[list[int]]:
        """`encode` over many texts (parallel in Rust).

        add_special_tokens applies the file's post-processor, if it has one: an imported Marian source gets
        </s> appended, a BART source <s> ... </s> around it; ours have none, so nothing changes. max_len cuts
        the text's tokens so that the result, special tokens included, holds at most max_len ids.
        """
        encodings = self._hf.encode_batch(list(texts), add_special_tokens=False)
        if max_len is not None:
            room = max_len - (self._hf.num_special_tokens_to_add(False) if add_special_tokens else 0)
            for encoding in encodings:
                encoding.truncate(max(room, 0))
        if add_special_tokens:
            encodings = [self._hf.post_process(encoding) for encoding in encodings]
        return [e.ids for e in encodings]

    def _check_ids(self, ids: Any) -> list[int]:
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        size = self.target_vocab_size
        for i in ids:
            if not 0 <= i < size:
                raise ValueError(f"Token id {i} is outside the vocabulary 0..{size - 1}; "
                                 "was the model trained with another tokenizer?")
        return [int(i) for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of target-side `ids`, special ids skipped; bytes of an incomplete character decode to U+FFFD."""
        return self._target.decode(self._check_ids(ids), skip_special_tokens=True)

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        """`decode` over many id lists."""
        return self._target.decode_batch([self._check_ids(ids) for ids in batch], skip_special_tokens=True)

    def tokens(self, ids: Sequence[int]) -> list[str]:
        """One readable label per target-side id (for attention plots): each token decoded on its own."""
        return [self._target.decode([i], skip_special_tokens=False) for i in self._check_ids(ids)]

    def save(self, path: str | Path) -> Path:
        """Write the standard `tokenizer.json` into directory `path` (or to `path` if it ends in .json),
        and `target_tokenizer.json` next to it when the target side has a tokenizer of its own."""
        source = _file(path)
        source.parent.mkdir(parents=True, exist_ok=True)
        self._hf.save(str(source))
        if self._target is not self._hf:
            self._target.save(str(_target_file(source)))
        return source

    @classmethod
    def load(
        cls, path: str | Path, pad_id: int | None = None, bos_id: int | None = None, eos_id: int | None = None
    ) -> Tokenizer:
        """Read a `tokenizer.json` written by `save` (the file, or a directory holding one), and
        `target_tokenizer.json` beside it if there is one. Special ids as in the constructor."""
        source = _file(path)
        if not source.is_file():
            raise FileNotFoundError(
                f"No tokenizer file at {source}; pass a tokenizer.json or a model directory holding one"
            )
        target_file = _target_file(source)
        target = HFTokenizer.from_file(str(target_file)) if target_file.is_file() else None
        return cls(HFTokenizer.from_file(str(source)), pad_id=pad_id, bos_id=bos_id, eos_id=eos_id, target=target)


def _check_our_specials(hf_tokenizer: HFTokenizer) -> None:
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        found = hf_tokenizer.token_to_id(token)
        if found != expected_id:
            raise ValueError(
                f"Special token {token} has id {found}, expected {expected_id}; train the tokenizer with "
                f"train_bpe(), which reserves {list(SPECIAL_TOKENS)} as ids 0..3, or give the tokenizer's "
                "own pad_id, bos_id and eos_id (load_model_dir reads them from the model's config.yaml)"
            )


def train_bpe(
    texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2, split_han: bool = True, mask: bool = False
) -> Tokenizer:
    """Train a byte-level BPE on `texts` (for a joint vocabulary pass sources and targets together).

    The pre-tokenizer splits at spaces and punctuation (GPT-2's pattern), so in a script written without
    spaces a whole clause is one pre-token that the merges cut up by frequency alone. `split_han` (the
    default) makes each Han character (Chinese, and the kanji of Japanese) a pre-token of its own first, as
    BERT's tokenizer does: merges then build characters from their bytes but never cross them (Chinese →
    English: docs/RESULTS.md). Decoding is exact either way. `mask` reserves <mask> as id 4 too (masked
    language modelling); without it the vocabulary is exactly what it was before <mask> existed.
    """
    specials = [*SPECIAL_TOKENS, MASK_TOKEN] if mask else list(SPECIAL_TOKENS)
    minimum = _N_BYTES + len(specials)
    if vocab_size <= minimum:
        raise ValueError(
            f"vocab_size={vocab_size} leaves no room for merges: the 256 byte tokens and "
            f"{len(specials)} specials take {minimum}; use vocab_size > {minimum} (e.g. 8000)"
        )
    if min_frequency < 1:
        raise ValueError(f"min_frequency={min_frequency} must be at least 1")
    hf = HFTokenizer(models.BPE(unk_token="<unk>"))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.pre_tokenizer = byte_level if not split_han else pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"\p{Han}"), behavior="isolated"), byte_level])
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(texts, trainer)
    tokenizer = Tokenizer(hf)
    if tokenizer.vocab_size < vocab_size:
        logger.info("BPE stopped at %d tokens of the %d asked (no more pairs with frequency >= %d)",
                    tokenizer.vocab_size, vocab_size, min_frequency)
    return tokenizer
