import json
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer.data.tokenizer import SPECIAL_TOKENS, Tokenizer, train_bpe

SAMPLE = [
    "In the beginning God created the heaven and the earth.",
    "Im Anfang schuf Gott die Himmel und die Erde.",
    "Au commencement, Dieu créa les cieux et la terre.",
    "En el principio creó Dios los cielos y la tierra.",
    "В начале сотворил Бог небо и землю.",
    "起初， 神创造天地。",
    "はじめに神は天と地とを創造された。",
    "태초에 하나님이 천지를 창조하시니라",
    "در ابتدا، خدا آسمانها و زمین را آفرید.",
    "आदि में परमेश्‍वर ने आकाश और पृथ्वी की सृष्टि की।",
    "Lorem ipsum 🙂 e\u0301 \t  tabs and  double  spaces\r\n",
]
VOCAB = 400


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_bpe(SAMPLE * 20, vocab_size=VOCAB, min_frequency=2)


def test_special_ids(tok: Tokenizer) -> None:
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    assert [tok.hf_tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert 260 < tok.vocab_size <= VOCAB
    assert len(tok) == tok.vocab_size


def test_encode_adds_no_specials_and_learns_merges(tok: Tokenizer) -> None:
    text = "In the beginning God created the heaven and the earth."
    ids = tok.encode(text)
    assert all(i >= len(SPECIAL_TOKENS) for i in ids)
    assert len(ids) < len(text.encode()) // 2  # merges were learned
    assert tok.encode_batch([text, "x"]) == [ids, tok.encode("x")]


def test_special_token_text_is_plain_text(tok: Tokenizer) -> None:
    text = "a <eos> b <pad>"
    ids = tok.encode(text)
    assert not set(ids) & {0, 1, 2, 3}
    assert tok.decode(ids) == text


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_round_trip_any_text(tok: Tokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("text", ["", " ", "\n\n", "\x00\x7f", "👩‍👩‍👧 ﷺ 𝕏", "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇", "\u3000\u2028\ufeff"])
def test_round_trip_odd_text(tok: Tokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=VOCAB * 4)))
def test_decode_any_ids_never_raises(tok: Tokenizer, ids: list[int]) -> None:
    ids = [i % tok.vocab_size for i in ids]
    assert isinstance(tok.decode(ids), str)
    assert len(tok.tokens(ids)) == len(ids)


def test_decode_skips_specials_and_partial_bytes(tok: Tokenizer) -> None:
    ids = tok.encode("神")
    assert tok.decode([1, *ids, 2, 0, 0]) == "神"
    byte_id = tok.hf_tokenizer.token_to_id("ç")  # byte 0xE7: the first byte of a 3-byte character
    assert tok.decode([byte_id]) == "\ufffd"
    assert tok.decode_batch([[1, *ids, 2], []]) == ["神", ""]


def test_decode_out_of_vocab_id(tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match=f"Token id {tok.vocab_size} is outside the vocabulary"):
        tok.decode([5, tok.vocab_size])
    with pytest.raises(ValueError, match="Token id -1"):
        tok.decode([-1])


def test_save_load_round_trip(tok: Tokenizer, tmp_path: Path) -> None:
    assert tok.save(tmp_path / "run") == tmp_path / "run" / "tokenizer.json"  # a model directory
    assert tok.save(tmp_path / "bpe.json") == tmp_path / "bpe.json"
    json.loads((tmp_path / "run" / "tokenizer.json").read_text(encoding="utf-8"))
    for source in (tmp_path / "run", tmp_path / "bpe.json", tmp_path / "run" / "tokenizer.json"):
        loaded = Tokenizer.load(source)
        assert loaded.vocab_size == tok.vocab_size
        for text in SAMPLE + ["a <eos> b"]:
            assert loaded.encode(text) == tok.encode(text)


def test_load_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"No tokenizer file at .*tokenizer\.json"):
        Tokenizer.load(tmp_path)


def test_vocab_size_too_small() -> None:
    with pytest.raises(ValueError, match=r"vocab_size=260 .*vocab_size > 260"):
        train_bpe(SAMPLE, vocab_size=260)
    with pytest.raises(ValueError, match="min_frequency=0"):
        train_bpe(SAMPLE, vocab_size=300, min_frequency=0)


def test_explicit_special_ids_target_file_and_source_specials(tok: Tokenizer, tmp_path: Path) -> None:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import processors

    source = HFTokenizer.from_str(tok.hf_tokenizer.to_str())
    source.post_processor = processors.TemplateProcessing(single="$A <eos>", special_tokens=[("<eos>", 2)])
    target = HFTokenizer.from_str(tok.hf_tokenizer.to_str())
    pair = Tokenizer(source, pad_id=0, bos_id=0, eos_id=2, target=target)  # Marian-like: decoding starts with pad
    assert (pair.pad_id, pair.bos_id, pair.eos_id) == (0, 0, 2)
    text = "In the beginning"
    plain = tok.encode(text)
    assert pair.encode_batch([text], add_special_tokens=True) == [plain + [2]]
    assert pair.encode_batch([text], add_special_tokens=True, max_len=3) == [plain[:2] + [2]]
    assert tok.encode_batch([text], add_special_tokens=True, max_len=3) == [plain[:3]]  # ours: no specials
    pair.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"tokenizer.json", "target_tokenizer.json"}
    loaded = Tokenizer.load(tmp_path, pad_id=0, bos_id=0, eos_id=2)
    assert loaded.target_hf_tokenizer is not loaded.hf_tokenizer and loaded.decode(plain) == text
    with pytest.raises(ValueError, match=r"Special token <pad> has id None, expected 0.*give the tokenizer's own"):
        Tokenizer(HFTokenizer.from_str(source.to_str().replace('"<pad>"', '"<nopad>"')))
    with pytest.raises(ValueError, match=r"eos_id=9999 is outside the tokenizer's vocabulary"):
        Tokenizer(source, pad_id=0, bos_id=1, eos_id=9999)


def test_split_han_keeps_merges_inside_one_han_character() -> None:
    chinese = ["起初， 神创造天地。", "地是空虚混沌，渊面黑暗； 神的灵运行在水面上。", "神说：“要有光。”就有了光。"]
    plain, split = (train_bpe((SAMPLE + chinese) * 20, vocab_size=VOCAB, split_han=flag) for flag in (False, True))
    text = "神创造天地 In the beginning 神说：“要有光。”"

    def han_per_token(tok: Tokenizer) -> list[int]:  # Han characters (unicodedata: CJK UNIFIED IDEOGRAPH) per token
        return [sum(unicodedata.name(c, "").startswith("CJK UNIFIED") for c in tok.decode([i]))
                for i in tok.encode(text)]

    assert max(han_per_token(plain)) > 1  # without it, frequent runs of characters merge into one token
    assert max(han_per_token(split)) == 1
    assert split.decode(split.encode(text)) == text
    latin = "In the beginning, Gott schuf: В начале."  # text without Han is pre-tokenized as before
    pieces = [tok.hf_tokenizer.pre_tokenizer.pre_tokenize_str(latin) for tok in (plain, split)]
    assert pieces[0] == pieces[1]


def test_a_masked_lm_tokenizer_reserves_mask_as_id_4_and_others_do_not_have_it():
    texts = ["the king went to the city", "a woman wept by the river"] * 20
    plain, masked = train_bpe(texts, 300, 1), train_bpe(texts, 300, 1, mask=True)
    assert plain.mask_id is None and masked.mask_id == 4
    assert masked.encode("the <mask> went") != [*masked.encode("the "), 4, *masked.encode(" went")]  # plain text
