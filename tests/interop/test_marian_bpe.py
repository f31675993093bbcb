"""Marian directories whose SentencePiece files are BPE models (model_type=2): import-hf converts them, and the
converted tokenizer gives the ids and texts of transformers' MarianTokenizer (which runs sentencepiece itself)."""

import json
import random

import pytest

transformers = pytest.importorskip("transformers")
sentencepiece = pytest.importorskip("sentencepiece")

from tests.interop.test_huggingface import SOURCE_TEXT, TARGET_TEXT  # noqa: E402
from transformer.interop import load_hf_dir  # noqa: E402
from transformer.interop.marian_tokenizer import _read_spm, marian_tokenizer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")  # MarianTokenizer's hint


@pytest.fixture(scope="module")
def bpe_marian_dir(tmp_path_factory):
    """save_pretrained of a random MarianMTModel and a MarianTokenizer over BPE SentencePiece models trained
    here; vocab.json is the joint vocabulary, <pad> last."""
    root = tmp_path_factory.mktemp("marian_bpe")
    pieces: dict[str, int] = {}
    for name, lines in (("source", SOURCE_TEXT), ("target", TARGET_TEXT)):
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_prefix=str(root / name), vocab_size=80, model_type="bpe",
            character_coverage=1.0, bos_id=-1, eos_id=0, unk_id=1, pad_id=-1, minloglevel=2)
        (root / f"{name}.model").rename(root / f"{name}.spm")
        processor = sentencepiece.SentencePieceProcessor(model_file=str(root / f"{name}.spm"))
        for i in range(processor.get_piece_size()):
            pieces.setdefault(processor.id_to_piece(i), len(pieces))
    pieces["<pad>"] = len(pieces)
    (root / "vocab.json").write_text(json.dumps(pieces), encoding="utf-8")
    tokenizer = transformers.MarianTokenizer(str(root / "source.spm"), str(root / "target.spm"),
                                             str(root / "vocab.json"))
    pad = len(pieces) - 1
    config = transformers.MarianConfig(vocab_size=len(pieces), d_model=16, encoder_layers=1, decoder_layers=1,
                                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                       decoder_ffn_dim=32, pad_token_id=pad, decoder_start_token_id=pad,
                                       eos_token_id=0, max_position_embeddings=64)
    hf_dir = root / "hf"
    transformers.MarianMTModel(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    return hf_dir, tokenizer, dict(pad_id=pad, bos_id=pad, eos_id=0)


def test_bpe_spm_files_give_the_ids_and_texts_of_marian_tokenizer(bpe_marian_dir):
    hf_dir, hf_tokenizer, ids = bpe_marian_dir
    assert _read_spm(hf_dir / "source.spm").trainer_spec.model_type == 2
    ours = marian_tokenizer(hf_dir, **ids)
    texts = [*SOURCE_TEXT[:150], "", "  ka  ro  ", "mi\ttu\u00a0sé", "ﬁ ＫＡ", "karomi, tusé!"]
    assert ours.encode_batch(texts, add_special_tokens=True) == hf_tokenizer(texts)["input_ids"]
    rng = random.Random(0)
    vocab = len(hf_tokenizer.get_vocab())
    samples = [[rng.randrange(vocab) for _ in range(rng.randint(0, 15))] for _ in range(300)]
    assert ours.decode_batch(samples) == hf_tokenizer.batch_decode(samples, skip_special_tokens=True)


def test_import_hf_reads_a_bpe_marian_directory(bpe_marian_dir):
    hf_dir, hf_tokenizer, _ = bpe_marian_dir
    _, tokenizer, run = load_hf_dir(hf_dir)
    assert (run.model.pad_id, run.model.eos_id) == (len(hf_tokenizer.get_vocab()) - 1, 0)
    assert tokenizer.encode_batch(SOURCE_TEXT[:20], add_special_tokens=True) == hf_tokenizer(SOURCE_TEXT[:20])[
        "input_ids"]


def test_other_sentencepiece_model_types_are_still_refused(tmp_path):
    path = tmp_path / "word.model"
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(SOURCE_TEXT), model_prefix=str(tmp_path / "word"),
                                             vocab_size=60, model_type="word", minloglevel=2)
    with pytest.raises(ValueError, match=r"model_type=3 \(Unigram, 1, and BPE, 2, are supported\)"):
        _read_spm(path)
