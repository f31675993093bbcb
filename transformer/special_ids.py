"""The rule for the special token ids PAD, BOS (the decoder's start token) and EOS, written once.

PAD and EOS must differ: padding would otherwise end every sentence. BOS may equal PAD (Marian starts
decoding from the pad token) or EOS (BART starts from </s>). Every id is a non-negative integer, inside the
vocabulary when its size is known. The config, the tokenizer, batching and decoding all check through here.
"""

from __future__ import annotations


def check_special_ids(
    pad_id: object, bos_id: object, eos_id: object, vocab_size: int | None = None, *,
    prefix: str = "", vocabulary: str | None = None, fix: str = "",
) -> None:
    """Raise a ValueError naming the offending id when the rule above is broken.

    `prefix` goes before each id's name (e.g. "model."), `vocabulary` names the vocabulary `vocab_size`
    measures (default: "the vocabulary of size N"), and `fix`, if given, ends the out-of-vocabulary message.
    """
    ids = {"pad_id": pad_id, "bos_id": bos_id, "eos_id": eos_id}
    for name, value in ids.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{prefix}{name}={value!r} must be a non-negative integer token id")
    if pad_id == eos_id:
        raise ValueError(f"special ids must differ, got {ids}: {prefix}pad_id={pad_id} equals {prefix}eos_id={eos_id}; "
                         "they must be different tokens (bos_id may equal pad_id, as in Marian, or eos_id, as in BART)")
    if vocab_size is None:
        return
    for name, value in ids.items():
        if value >= vocab_size:
            where = vocabulary or f"the vocabulary of size {vocab_size}"
            raise ValueError(f"{prefix}{name}={value} is outside {where}" + (f"; {fix}" if fix else ""))
