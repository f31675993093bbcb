"""A BERT directory's WordPiece tokenizer as our Tokenizer: its tokenizer.json (BertTokenizerFast.save_pretrained
writes one), or, in a directory with only vocab.txt, the same tokenizer built from the vocabulary as BERT's
fast tokenizer is: BertNormalizer (lowercase per tokenizer_config.json's do_lower_case), BertPreTokenizer,
WordPiece with "##" continuations, [CLS] X [SEP].

The special ids are the vocabulary's: [PAD] is pad_id, [CLS] bos_id and [SEP] eos_id, since our encode paths
put bos and eos around a text where BERT puts [CLS] and [SEP].
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer

from transformer.data.tokenizer import Tokenizer

DEFAULT_SPECIALS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                    "mask_token": "[MASK]"}


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file's object, or {} when the file is missing."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def special_tokens(hf_dir: Path) -> dict[str, str]:
    """tokenizer_config.json's special token strings (a token may be stored as {"content": ...}), else BERT's."""
    settings = read_json(hf_dir / "tokenizer_config.json")
    found = {}
    for key, default in DEFAULT_SPECIALS.items():
        value = settings.get(key) or default
        found[key] = value["content"] if isinstance(value, dict) else str(value)
    return found


def wordpiece_from_vocab(hf_dir: Path) -> HFTokenizer:
    """The fast BERT tokenizer of `hf_dir/vocab.txt`, its settings from tokenizer_config.json."""
    settings = read_json(hf_dir / "tokenizer_config.json")
    specials = special_tokens(hf_dir)
    lines = (hf_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline after the last token
    vocab: dict[str, int] = {}
    for token in lines:
        vocab.setdefault(token.rstrip("\r"), len(vocab))
    missing = [token for token in specials.values() if token not in vocab]
    if missing:
        raise ValueError(f"{hf_dir / 'vocab.txt'} lacks the special tokens {missing}; a BERT vocabulary has "
                         f"{sorted(specials.values())} (or name yours in tokenizer_config.json)")
    hf = HFTokenizer(models.WordPiece(vocab, unk_token=specials["unk_token"], max_input_chars_per_word=100))
    hf.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=bool(settings.get("tokenize_chinese_chars", True)),
        strip_accents=settings.get("strip_accents"), lowercase=bool(settings.get("do_lower_case", True)))
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = specials["cls_token"], specials["sep_token"]
    hf.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    hf.decoder = decoders.WordPiece(prefix="##")
    hf.add_special_tokens([AddedToken(token, special=True) for token in specials.values()])
    return hf


def bert_tokenizer(hf_dir: Path, config: dict[str, Any]) -> Tokenizer:
    """Our Tokenizer for a BERT directory: tokenizer.json if there is one, else vocab.txt; pad = [PAD] (or
    config.json's pad_token_id), bos = [CLS], eos = [SEP]."""
    if (hf_dir / "tokenizer.json").is_file():
        hf = HFTokenizer.from_file(str(hf_dir / "tokenizer.json"))
    elif (hf_dir / "vocab.txt").is_file():
        hf = wordpiece_from_vocab(hf_dir)
    else:
        raise FileNotFoundError(f"{hf_dir} has no tokenizer: a bert directory needs tokenizer.json or vocab.txt "
                                "(save the tokenizer too: tokenizer.save_pretrained(DIR))")
    hf.no_padding()
    hf.no_truncation()
    specials = special_tokens(hf_dir)
    ids = {key: hf.token_to_id(token) for key, token in specials.items()}
    if ids["pad_token"] is None:
        ids["pad_token"] = config.get("pad_token_id")
    absent = [specials[key] for key in ("pad_token", "cls_token", "sep_token") if ids[key] is None]
    if absent:
        raise ValueError(f"the tokenizer in {hf_dir} has no {absent}: BERT texts are [CLS] X [SEP], padded with "
                         "[PAD]; name its own tokens in tokenizer_config.json (cls_token, sep_token, pad_token)")
    return Tokenizer(hf, pad_id=ids["pad_token"], bos_id=ids["cls_token"], eos_id=ids["sep_token"])
