"""Parity with Hugging Face: random-weight MarianMTModel / BartForConditionalGeneration built from small configs.

The models for the decoding tests are trained for a few seconds to copy their input, so that outputs end with
EOS at different lengths and beams finish at different steps (an untrained model repeats one token forever).
"""

import json
import random
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
sentencepiece = pytest.importorskip("sentencepiece")

from transformer.cli import main  # noqa: E402
from transformer.config import DecodeConfig  # noqa: E402
from transformer.decoding import beam_search, greedy_search  # noqa: E402
from transformer.inference import load_model_dir, translate  # noqa: E402
from transformer.interop import import_hf, load_hf_dir, model_from_hf  # noqa: E402
from transformer.interop.huggingface import model_config_from_hf  # noqa: E402
from transformer.interop.marian_tokenizer import marian_tokenizer  # noqa: E402

SMALL = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
             encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64, dropout=0.0)
MAX_NEW = 12
pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")  # MarianTokenizer's hint


def _marian_config(vocab_size: int, **changes):
    pad = vocab_size - 1  # Marian's layout: </s> 0, <unk> 1, <pad> last, decoding starts with <pad>
    return transformers.MarianConfig(**{**SMALL, "vocab_size": vocab_size, "pad_token_id": pad,
                                        "decoder_start_token_id": pad, "eos_token_id": 0,
                                        "activation_function": "swish", "scale_embedding": True, **changes})


def _bart_config(vocab_size: int, **changes):
    return transformers.BartConfig(**{**SMALL, "vocab_size": vocab_size, **changes})  # <s> 0, pad 1, </s> 2


def _randomize(hf) -> None:
    """Move every trainable tensor away from its initial value (LayerNorms from (1, 0), the zero biases)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in hf.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=generator) * 0.05)
        hf.final_logits_bias.normal_(generator=generator)


def _copy_trained(hf, steps: int = 150):
    """Train `hf` briefly to copy sequences of ids 4..29: it learns where to put EOS."""
    config = hf.config
    pad, eos = config.pad_token_id, config.eos_token_id
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(hf.parameters(), lr=5e-3)
    hf.train()
    for _ in range(steps):
        src = torch.full((32, 9), pad)
        labels = torch.full((32, 9), -100)
        for i, n in enumerate(torch.randint(1, 8, (32,), generator=generator).tolist()):
            tokens = torch.randint(4, 30, (n,), generator=generator)
            src[i, :n], labels[i, :n] = tokens, tokens
            src[i, n], labels[i, n] = eos, eos
        loss = hf(input_ids=src, attention_mask=(src != pad).long(), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        hf.final_logits_bias.normal_(0.0, 0.1)
        hf.final_logits_bias[0, pad] = -1e4  # never generated: equal to our ban, with or without renormalizing
    hf.generation_config.forced_eos_token_id = None  # we stop at the limit without forcing EOS
    return hf.eval()


@pytest.fixture(scope="module")
def trained():
    return {
        "marian": _copy_trained(transformers.MarianMTModel(_marian_config(64))),
        "bart": _copy_trained(transformers.BartForConditionalGeneration(_bart_config(64, init_std=0.1))),
    }


def _sources(config, batch: int = 8) -> torch.Tensor:
    """Copy-task sources of lengths 1..8 ending with EOS, right-padded (padding in the batch)."""
    generator = torch.Generator().manual_seed(3)
    src = torch.full((batch, 9), config.pad_token_id)
    for i in range(batch):
        n = i % 8 + 1
        src[i, :n] = torch.randint(4, 30, (n,), generator=generator)
        src[i, n] = config.eos_token_id
    return src


def _strip(row: torch.Tensor, eos: int, pad: int) -> list[int]:
    """generate's output row without the start token, cut at EOS (or at the padding after it)."""
    out = []
    for token in row.tolist()[1:]:
        if token in (eos, pad):
            break
        out.append(token)
    return out


def _special(config) -> dict:
    return dict(pad_id=config.pad_token_id, bos_id=config.decoder_start_token_id, eos_id=config.eos_token_id)


# ------------------------------------------------------------------------------------------------- logits

VARIANTS = {
    "marian": lambda: transformers.MarianMTModel(_marian_config(50)),
    "marian-separate-vocabs-untied": lambda: transformers.MarianMTModel(_marian_config(
        50, share_encoder_decoder_embeddings=False, decoder_vocab_size=40, tie_word_embeddings=False,
        pad_token_id=39, decoder_start_token_id=39,
        activation_function="relu", scale_embedding=False)),
    # transformers 5 unties the encoder's and the decoder's embeddings too when tie_word_embeddings is false
    "marian-shared-vocab-untied": lambda: transformers.MarianMTModel(_marian_config(50, tie_word_embeddings=False)),
    "bart": lambda: transformers.BartForConditionalGeneration(_bart_config(50)),
    "bart-scaled-relu": lambda: transformers.BartForConditionalGeneration(_bart_config(
        50, scale_embedding=True, activation_function="relu")),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_logits_equal_hf_with_padding_in_the_batch(variant):
    torch.manual_seed(0)
    hf = VARIANTS[variant]().eval()
    _randomize(hf)
    ours = model_from_hf(hf)
    config = hf.config
    assert not ours.training
    src = torch.randint(3, 39, (3, 9))
    src[1, 6:] = src[2, 3:] = config.pad_token_id
    tgt = torch.randint(3, 39, (3, 7))
    tgt[:, 0] = config.decoder_start_token_id
    with torch.no_grad():
        theirs = hf(input_ids=src, attention_mask=(src != config.pad_token_id).long(), decoder_input_ids=tgt).logits
        mine = ours(src, tgt)
    assert mine.shape == theirs.shape
    assert (mine - theirs).abs().max() < 1e-4


def test_options_become_model_config_fields():
    marian = model_config_from_hf(_marian_config(50).to_dict(), output_bias=True)
    assert (marian.positional, marian.sinusoidal_interleaved, marian.activation, marian.scale_embedding) == (
        "sinusoidal", False, "swish", True)
    assert (marian.pad_id, marian.bos_id, marian.eos_id, marian.output_bias) == (49, 49, 0, True)
    bart = model_config_from_hf(_bart_config(50).to_dict())
    assert (bart.positional, bart.position_offset, bart.layernorm_embedding, bart.activation) == (
        "learned", 2, True, "gelu")
    assert (bart.pad_id, bart.bos_id, bart.eos_id, bart.scale_embedding) == (1, 2, 2, False)


# ----------------------------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("model_type", ["marian", "bart"])
def test_greedy_equals_generate(trained, model_type):
    hf = trained[model_type]
    config, src = hf.config, _sources(hf.config)
    ours = model_from_hf(hf)
    generated = hf.generate(input_ids=src, attention_mask=(src != config.pad_token_id).long(), num_beams=1,
                            do_sample=False, max_new_tokens=MAX_NEW)
    theirs = [_strip(row, config.eos_token_id, config.pad_token_id) for row in generated]
    mine = greedy_search(ours, src, **_special(config), max_new_tokens=MAX_NEW)
    assert mine == theirs
    assert len({len(tokens) for tokens in mine}) >= 3  # EOS at different steps: a real test of stopping


@pytest.mark.parametrize("model_type", ["marian", "bart"])
def test_beam_4_equals_generate_with_length_penalty_0(trained, model_type):
    # Ours: log P / ((5 + n) / 6) ** alpha; HF: log P / n ** length_penalty. Equal only at alpha = length_penalty = 0.
    hf = trained[model_type]
    config, src = hf.config, _sources(hf.config)
    ours = model_from_hf(hf)
    generated = hf.generate(input_ids=src, attention_mask=(src != config.pad_token_id).long(), num_beams=4,
                            do_sample=False, max_new_tokens=MAX_NEW, length_penalty=0.0, early_stopping=False,
                            return_dict_in_generate=True, output_scores=True)
    theirs = [_strip(row, config.eos_token_id, config.pad_token_id) for row in generated.sequences]
    best = [hypotheses[0] for hypotheses in beam_search(ours, src, **_special(config), beam_size=4, alpha=0.0,
                                                          max_new_tokens=MAX_NEW)]
    assert [h.tokens for h in best] == theirs
    torch.testing.assert_close(torch.tensor([h.score for h in best]), generated.sequences_scores,
                               atol=1e-4, rtol=1e-4)
    assert len({len(h.tokens) for h in best}) >= 3


# ------------------------------------------------------------------------------------------------- errors


def test_unknown_model_type_lists_the_supported_ones(tmp_path):
    with pytest.raises(ValueError, match=r"model_type='t5' is not supported; import-hf reads \['marian', 'bart', "):
        model_config_from_hf({"model_type": "t5"})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "pegasus"}))
    with pytest.raises(ValueError, match=r"model_type='pegasus' is not supported"):
        load_hf_dir(tmp_path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"normalize_before": True}, r"normalize_before=True \(supported: False\)"),
        ({"add_final_layer_norm": True}, r"add_final_layer_norm=True \(supported: False\)"),
        ({"activation_function": "gelu_new"}, r"activation_function='gelu_new' \(supported: \['gelu', 'relu', "),
        ({"decoder_attention_heads": 2}, r"encoder_attention_heads=4 != decoder_attention_heads=2"),
    ],
)
def test_unsupported_option_is_named_with_what_is_supported(changes, message):
    with pytest.raises(ValueError, match=message):
        model_config_from_hf({**_bart_config(50).to_dict(), **changes})


def test_import_hf_cli_reports_an_unsupported_checkpoint(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({**_marian_config(50).to_dict(), "normalize_embedding": True}))
    assert main(["import-hf", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "normalize_embedding=True (supported: False)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -------------------------------------------------------------------------------------- tokenizer and CLI


def _lines(syllables: str, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    parts = syllables.split()
    words = sorted({"".join(rng.choice(parts) for _ in range(rng.randint(1, 3))) for _ in range(300)})
    return [" ".join(rng.choice(words) + (rng.choice([",", ".", "!"]) if rng.random() < 0.1 else "")
                     for _ in range(rng.randint(2, 9))) for _ in range(n)]


SOURCE_TEXT = _lines("ka ro mi tu sé na lo ve ßa ün pe di", 300, seed=0)
TARGET_TEXT = _lines("the an ing ed ow th er ly on", 300, seed=1)


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory):
    """save_pretrained of a copy-trained random Marian model and a MarianTokenizer whose SentencePiece models
    are trained here; vocab.json is the joint vocabulary (source pieces, target pieces, two language codes,
    <pad> last)."""
    root = tmp_path_factory.mktemp("marian")
    pieces: dict[str, int] = {}
    for name, lines in (("source", SOURCE_TEXT), ("target", TARGET_TEXT)):
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_prefix=str(root / name), vocab_size=100, model_type="unigram",
            character_coverage=1.0, bos_id=-1, eos_id=0, unk_id=1, pad_id=-1, minloglevel=2)
        (root / f"{name}.model").rename(root / f"{name}.spm")
        processor = sentencepiece.SentencePieceProcessor(model_file=str(root / f"{name}.spm"))
        for i in range(processor.get_piece_size()):
            pieces.setdefault(processor.id_to_piece(i), len(pieces))
    for code in (">>de<<", ">>fr<<", "<pad>"):  # target-language codes, as multilingual OPUS-MT models have
        pieces[code] = len(pieces)
    (root / "vocab.json").write_text(json.dumps(pieces), encoding="utf-8")
    tokenizer = transformers.MarianTokenizer(str(root / "source.spm"), str(root / "target.spm"),
                                             str(root / "vocab.json"))
    hf = _copy_trained(transformers.MarianMTModel(_marian_config(len(pieces))))
    hf_dir = root / "hf"
    hf.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    return hf_dir, hf, tokenizer


def test_marian_tokenizer_gives_the_ids_of_hf_marian_tokenizer(marian_dir):
    hf_dir, hf, hf_tokenizer = marian_dir
    config = hf.config
    ours = marian_tokenizer(hf_dir, **_special(config))
    texts = [*SOURCE_TEXT[:100], "", "  ka  ro  ", "mi\ttu\u00a0sé", "ﬁ ＫＡ", "ka € ro €€ x", ">>de<< ka ro"]
    assert ours.encode_batch(texts, add_special_tokens=True) == hf_tokenizer(texts)["input_ids"]
    rng = random.Random(0)
    ids = [[rng.randrange(config.vocab_size) for _ in range(rng.randint(0, 15))] for _ in range(300)]
    assert ours.decode_batch(ids) == hf_tokenizer.batch_decode(ids, skip_special_tokens=True)


def test_import_hf_then_translate_and_evaluate_match_generate(marian_dir, tmp_path, capsys):
    hf_dir, hf, hf_tokenizer = marian_dir
    lines = SOURCE_TEXT[:6] + ["ka", "tu ro mi na lo ve"]
    for name, text in (("test.src", lines), ("test.tgt", lines)):
        (tmp_path / name).write_text("\n".join(text) + "\n", encoding="utf-8")
    files = [f"--set=data.{split}_{side}={tmp_path / ('test.' + side)}" for split in ("train", "test")
             for side in ("src", "tgt")]
    out = tmp_path / "model"
    assert main(["import-hf", str(hf_dir), "--out", str(out), "--set", "data.corpus=files", *files]) == 0
    assert {"config.yaml", "model.safetensors", "tokenizer.json", "target_tokenizer.json"} <= {
        p.name for p in out.iterdir()}
    capsys.readouterr()

    batch = hf_tokenizer(lines, return_tensors="pt", padding=True)
    for beam, options in ((1, {}), (4, {"length_penalty": 0.0, "early_stopping": False})):
        generated = hf.generate(**batch, num_beams=beam, do_sample=False, max_new_tokens=40, **options)
        assert all(hf.config.eos_token_id in row.tolist() for row in generated)  # ended before any limit
        expected = hf_tokenizer.batch_decode(generated, skip_special_tokens=True)
        result = tmp_path / f"beam{beam}.txt"
        args = ["--beam", str(beam), "--alpha", "0", "--input", str(tmp_path / "test.src"), "--output", str(result)]
        assert main(["translate", "--model", str(out), *args]) == 0
        assert result.read_text(encoding="utf-8").splitlines() == expected

    assert main(["evaluate", "--model", str(out), "--split", "test", "--beam", "1"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == len(lines)


def test_bart_directory_with_tokenizer_json_imports_and_translates(trained, tmp_path):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    hf = trained["bart"]
    specials = ["<s>", "<pad>", "</s>", "<unk>"]  # BART's ids 0..3
    bpe = HFTokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(TARGET_TEXT, trainers.BpeTrainer(vocab_size=hf.config.vocab_size, special_tokens=specials,
                                                            show_progress=False))
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    hf_dir = tmp_path / "bart"
    hf.save_pretrained(hf_dir)
    bpe.save(str(hf_dir / "tokenizer.json"))

    config = import_hf(hf_dir, tmp_path / "model")
    assert (config.model.positional, config.model.bos_id, config.model.eos_id) == ("learned", 2, 2)
    model, tokenizer, _ = load_model_dir(tmp_path / "model")
    lines = ["the an", "thely oned"]
    ids = [bpe.encode(line).ids for line in lines]
    assert tokenizer.encode_batch(lines, add_special_tokens=True) == ids  # <s> ... </s>
    src = torch.full((2, max(map(len, ids))), hf.config.pad_token_id)
    for i, row in enumerate(ids):
        src[i, : len(row)] = torch.tensor(row)
    generated = hf.generate(input_ids=src, attention_mask=(src != 1).long(), num_beams=1, max_new_tokens=20)
    expected = [bpe.decode(_strip(row, 2, 1)) for row in generated]
    assert translate(model, tokenizer, lines, DecodeConfig(beam=1, max_len_a=0, max_len_b=20)) == expected


def test_new_model_dir_is_refused_when_it_exists(marian_dir, tmp_path):
    hf_dir, _, _ = marian_dir
    (tmp_path / "config.yaml").write_text("model: {}\n")
    with pytest.raises(ValueError, match=r"already holds a model; choose another --out"):
        import_hf(hf_dir, tmp_path)
    assert Path(tmp_path / "config.yaml").read_text() == "model: {}\n"
