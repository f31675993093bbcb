"""Marian's tokenizer files (source.spm, target.spm, vocab.json) as `tokenizers` files our Tokenizer reads.

What Hugging Face's MarianTokenizer does, and how the converted files reproduce it:

- Encoding a source: the source SentencePiece model cuts the text into pieces, vocab.json maps each piece to
  the model's id (a piece missing from vocab.json becomes <unk>), and </s> is appended. The source file here
  is a Unigram model with the SentencePiece scores, normalizer (the precompiled NFKC map, extra whitespace
  removed) and whitespace handling ("▁" prefix), indexed by vocab.json's ids, and a post-processor that
  appends </s>. An id whose piece the source model cannot produce (target-language pieces of a joint
  vocabulary, <pad>, </s>, <unk>) holds an unreachable placeholder, the piece followed by "▁": the
  pre-tokenizer splits text before every "▁", so no text ever matches it. A leading language code such as
  ">>fr<<" is kept as one token, as MarianTokenizer does (here it is recognized anywhere in the text).
- Decoding model output: ids map back to pieces through vocab.json (target_vocab.json when the vocabularies
  are separate), special tokens are dropped, "▁" becomes a space and the text is stripped. The target file
  holds every piece under its real string, for this.

Not reproduced: MarianTokenizer's optional Moses punctuation normalization (only when `sacremoses` is
installed); text that spells a special token such as "</s>" (we encode it as plain text); a character
source.spm does not know, which is <unk> here while MarianTokenizer first looks its surface up in
vocab.json (where a target-language piece may spell it); pieces of source.spm missing from vocab.json (a
warning says how many; MarianTokenizer maps them to <unk>).
SentencePiece BPE models (model_type=2), which some Marian directories carry, become a `tokenizers` BPE whose
merges are the pairs that spell each piece, ranked by the piece's id (as transformers' converter makes them);
other SentencePiece models, or ones with byte fallback, are refused with a ValueError.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer

from transformer.data.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

SPIECE = "▁"
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED = 1, 2, 3, 4  # SentencePiece piece types
_UNIGRAM, _BPE = 1, 2
MARIAN_FILES = ("source.spm", "target.spm", "vocab.json")


def _read_spm(path: Path) -> Any:
    """The ModelProto of a SentencePiece file (needs the `sentencepiece` and `protobuf` packages)."""
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as error:
        raise ModuleNotFoundError(
            f"reading Marian's SentencePiece files needs the sentencepiece and protobuf packages ({error}); "
            "install them with: pip install sentencepiece protobuf  (or pip install 'transformer[hf]')"
        ) from None
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    spec, norm = proto.trainer_spec, proto.normalizer_spec
    problems = []
    if spec.model_type not in (_UNIGRAM, _BPE):
        problems.append(f"model_type={spec.model_type} (Unigram, 1, and BPE, 2, are supported)")
    if spec.byte_fallback:
        problems.append("byte_fallback=true")
    if spec.treat_whitespace_as_suffix:
        problems.append("treat_whitespace_as_suffix=true")
    if not spec.split_by_whitespace:
        problems.append("split_by_whitespace=false")
    if not norm.escape_whitespaces:
        problems.append("escape_whitespaces=false")
    if problems:
        raise ValueError(f"{path}: unsupported SentencePiece options {', '.join(problems)}; import-hf converts "
                         "Unigram and BPE models with the default whitespace handling (those of OPUS-MT)")
    return proto


def _read_vocab(path: Path) -> list[str | None]:
    """vocab.json ({piece: id}) as a list indexed by id; None where no piece has that id."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; a Marian directory holds {', '.join(MARIAN_FILES)}")
    mapping = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(mapping, dict) or not all(isinstance(i, int) and i >= 0 for i in mapping.values()):
        raise ValueError(f"{path} must map each piece to a non-negative integer id")
    pieces: list[str | None] = [None] * (max(mapping.values()) + 1)
    for piece, index in mapping.items():
        if pieces[index] is not None:
            raise ValueError(f"{path}: pieces {pieces[index]!r} and {piece!r} share id {index}")
        pieces[index] = piece
    return pieces


def _is_language_code(piece: str) -> bool:
    return piece.startswith(">>") and piece.endswith("<<")


def _names(proto: Any, pieces: list[str | None], reachable_only: bool) -> list[str]:
    """The string of each id: its piece, or an unreachable placeholder (the piece followed by "▁", which the
    pre-tokenizer never leaves in a word) for an id without a piece, and with reachable_only for one whose piece
    `proto` cannot produce (source side). Decoding (target side) keeps every piece."""
    known = {p.piece for p in proto.pieces if p.type in (_NORMAL, _USER_DEFINED)}
    names = []
    for index, piece in enumerate(pieces):
        if piece is None:
            names.append(f"<unused{index}>{SPIECE}")
        elif reachable_only and piece not in known and not _is_language_code(piece):
            names.append(piece + SPIECE)
        else:
            names.append(piece)
    return names


def _unigram(proto: Any, pieces: list[str | None], unk_id: int, reachable_only: bool) -> HFTokenizer:
    """A tokenizer over vocab.json's ids, segmenting text as SentencePiece model `proto` does (Unigram or BPE).

    reachable_only: ids whose piece `proto` cannot produce get an unreachable placeholder (source side);
    otherwise every id keeps its piece, for decoding (target side).
    """
    if proto.trainer_spec.model_type == _BPE:
        tokenizer = _bpe(proto, _names(proto, pieces, reachable_only), unk_id)
    else:
        scores = {p.piece: p.score for p in proto.pieces if p.type in (_NORMAL, _USER_DEFINED)}
        floor = min(scores.values(), default=0.0) - 10.0
        vocab = [(name, scores.get(name, 0.0 if piece is None or name != piece else floor))
                 for name, piece in zip(_names(proto, pieces, reachable_only), pieces, strict=True)]
        tokenizer = HFTokenizer(models.Unigram(vocab, unk_id=unk_id, byte_fallback=False))
    spec = proto.normalizer_spec
    steps = [normalizers.Precompiled(spec.precompiled_charsmap)] if spec.precompiled_charsmap else []
    if spec.remove_extra_whitespaces:
        steps += [normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")]
    tokenizer.normalizer = normalizers.Sequence(steps)
    prepend = "always" if spec.add_dummy_prefix else "never"
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPIECE, prepend_scheme=prepend, split=True)
    # MarianTokenizer: pieces joined, "▁" -> " ", then the whole text stripped.
    tokenizer.decoder = decoders.Sequence([
        decoders.Replace(SPIECE, " "), decoders.Fuse(), decoders.Replace(Regex(r"^\s+|\s+$"), ""),
    ])
    return tokenizer


def _bpe(proto: Any, names: list[str], unk_id: int) -> HFTokenizer:
    """A BPE over the ids' `names` whose merges are, for each piece of `proto` in id order, the ways to spell it
    as two pieces, left part shortest first: SentencePiece merges the pair whose piece scores highest, and a
    BPE model's pieces score by their ids."""
    vocab: dict[str, int] = {}
    for index, name in enumerate(names):
        vocab.setdefault(name, index)
    pieces = [p.piece for p in proto.pieces if p.type in (_NORMAL, _USER_DEFINED)]
    merges = [(piece[:i], piece[i:]) for piece in pieces if piece in vocab for i in range(1, len(piece))
              if piece[:i] in vocab and piece[i:] in vocab]
    return HFTokenizer(models.BPE(vocab, merges, unk_token=names[unk_id], fuse_unk=True, byte_fallback=False))


def _find(pieces: list[str | None], token: str, where: Path) -> int:
    if token not in pieces:
        raise ValueError(f"{where} has no {token} entry; MarianTokenizer needs it too")
    return pieces.index(token)


def marian_tokenizer(hf_dir: str | Path, pad_id: int, bos_id: int, eos_id: int) -> Tokenizer:
    """Our Tokenizer for the Marian files in `hf_dir`: source side from source.spm, target side from
    target.spm, both with vocab.json's ids (target_vocab.json's for the target when
    tokenizer_config.json says separate_vocabs)."""
    hf_dir = Path(hf_dir)
    missing = [name for name in MARIAN_FILES if not (hf_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{hf_dir} lacks {', '.join(missing)}: a Marian directory written by "
                                f"save_pretrained holds {', '.join(MARIAN_FILES)}")
    settings_file = hf_dir / "tokenizer_config.json"
    settings = json.loads(settings_file.read_text(encoding="utf-8")) if settings_file.is_file() else {}
    source_pieces = _read_vocab(hf_dir / "vocab.json")
    separate = bool(settings.get("separate_vocabs", False))
    target_pieces = _read_vocab(hf_dir / "target_vocab.json") if separate else source_pieces
    source_spm, target_spm = _read_spm(hf_dir / "source.spm"), _read_spm(hf_dir / "target.spm")

    lost = [p.piece for p in source_spm.pieces if p.type == _NORMAL and p.piece not in source_pieces]
    if lost:
        logger.warning("%d pieces of source.spm are not in vocab.json (e.g. %s): MarianTokenizer maps them to "
                       "<unk>, the converted tokenizer segments around them", len(lost), lost[:5])
    eos_token, unk_token = "</s>", "<unk>"
    source = _unigram(source_spm, source_pieces, _find(source_pieces, unk_token, hf_dir / "vocab.json"), True)
    codes = [p for p in source_pieces if p is not None and _is_language_code(p)] if not separate else []
    if codes:
        source.add_tokens([AddedToken(code, normalized=False) for code in codes])
    source.post_processor = processors.TemplateProcessing(
        single=f"$A {eos_token}", special_tokens=[(eos_token, eos_id)]
    )
    target_vocab_file = hf_dir / ("target_vocab.json" if separate else "vocab.json")
    target = _unigram(target_spm, target_pieces, _find(target_pieces, unk_token, target_vocab_file), False)
    specials = [t for t in (eos_token, unk_token, "<pad>") if t in target_pieces]
    target.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    return Tokenizer(source, pad_id=pad_id, bos_id=bos_id, eos_id=eos_id, target=target)


def spm_unigram_tokenizer(path: Path, sentinels: list[str], eos_token: str, eos_id: int) -> HFTokenizer:
    """A SentencePiece Unigram file with its own ids (T5's spiece.model: <pad> 0, </s> 1, <unk> 2, ...) as a
    `tokenizers` Unigram, the `sentinels` (T5's <extra_id_N>) taking the ids after its pieces, special tokens
    (control pieces, <unk>, sentinels) dropped in decoding, and `eos_token` appended to every encoded text.
    Decoding removes the "▁" of the first piece only, as T5Tokenizer's Metaspace decoder does."""
    proto = _read_spm(path)
    pieces: list[str | None] = [p.piece for p in proto.pieces] + list(sentinels)
    unk = [i for i, p in enumerate(proto.pieces) if p.type == _UNKNOWN]
    if not unk or eos_token not in pieces:
        raise ValueError(f"{path} needs an <unk> piece and {eos_token}; is it the model's spiece.model?")
    tokenizer = _unigram(proto, pieces, unk[0], reachable_only=False)
    prepend = "always" if proto.normalizer_spec.add_dummy_prefix else "never"  # decoded as T5Tokenizer does
    tokenizer.decoder = decoders.Metaspace(replacement=SPIECE, prepend_scheme=prepend, split=True)
    specials = [p.piece for p in proto.pieces if p.type in (_CONTROL, _UNKNOWN)] + list(sentinels)
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {eos_token}", special_tokens=[(eos_token, eos_id)]
    )
    return tokenizer
