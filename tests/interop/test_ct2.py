"""CTranslate2 export: the export decodes to the tokens (and log-probs) of our own greedy and beam search.

Models are tiny and trained for a second to copy their input, so outputs end with EOS at different lengths
(an untrained model repeats one token up to the length limit, which would test little of the stopping rules).
"""

import json
import sys

import pytest
import torch
import torch.nn.functional as F
import transformers
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

from transformer import cli
from transformer.cli import main
from transformer.config import DecodeConfig, ModelConfig
from transformer.data.tokenizer import Tokenizer
from transformer.decoding import beam_search, greedy_search
from transformer.inference import load_model_dir, translate
from transformer.interop.ct2 import (
    QUANTIZATIONS,
    Ct2Translator,
    check_expressible,
    export_ct2,
    load_ct2_dir,
    vocabulary,
)
from transformer.interop.huggingface import model_config_from_hf, model_from_hf
from transformer.models import build_model

VOCAB = 24  # ids 4..23 are words; 0..3 our specials (<pad>, <bos>, <eos>, <unk>) unless a variant moves them
DECODE = dict(max_len_a=0.5, max_len_b=3)  # a copy of n words needs n + 1 tokens: long sources are cut at the limit

VARIANTS = {
    "paper": {},  # post-LN, sinusoidal (sin/cos interleaved), shared and tied embeddings, relu
    "pre-ln-learned-gelu": dict(norm_first=True, positional="learned", activation="gelu"),
    "separate-untied-bias": dict(share_embeddings=False, tie_output=False, output_bias=True, src_vocab_size=30),
    "bart-like": dict(positional="learned", position_offset=2, layernorm_embedding=True, scale_embedding=False,
                      bos_id=2),  # decoding starts with EOS
    "marian-like": dict(sinusoidal_interleaved=False, activation="swish", bos_id=0),  # starts with PAD
}


def _word_tokenizer(size: int, specials: dict[int, str]) -> HFTokenizer:
    words = {specials.get(i, f"w{i}"): i for i in range(size)}
    tokenizer = HFTokenizer(models.WordLevel(words, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer


def _tokenizer(config: ModelConfig, specials: dict[int, str] | None = None) -> Tokenizer:
    specials = specials or {0: "<pad>", 1: "<bos>", 2: "<eos>", 3: "<unk>"}
    source = _word_tokenizer(config.src_vocab_size, specials)
    target = None if config.share_embeddings else _word_tokenizer(config.tgt_vocab_size, specials)
    return Tokenizer(source, pad_id=config.pad_id, bos_id=config.bos_id, eos_id=config.eos_id, target=target)


def _words(config: ModelConfig) -> list[int]:
    specials = {config.pad_id, config.bos_id, config.eos_id, 3}
    return [i for i in range(min(config.src_vocab_size, config.tgt_vocab_size)) if i not in specials]


def _copy_trained(model, config: ModelConfig, steps: int = 80):
    """Teacher-forced training to copy sequences of 1..8 words: outputs end with EOS at different lengths."""
    words = torch.tensor(_words(config))
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        src = torch.full((32, 8), config.pad_id)
        tgt_in, tgt_out = torch.full((32, 9), config.pad_id), torch.full((32, 9), config.pad_id)
        for i, n in enumerate(torch.randint(1, 9, (32,), generator=generator).tolist()):
            seq = words[torch.randint(len(words), (n,), generator=generator)]
            src[i, :n], tgt_in[i, 1 : n + 1], tgt_out[i, :n] = seq, seq, seq
            tgt_in[i, 0], tgt_out[i, n] = config.bos_id, config.eos_id
        loss = F.cross_entropy(model(src, tgt_in).flatten(0, 1), tgt_out.flatten(), ignore_index=config.pad_id)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _sources(config: ModelConfig, batch: int = 10) -> tuple[torch.Tensor, list[list[int]]]:
    """Right-padded sources of 1..9 words (B, S) and the same without padding, as CTranslate2 takes them."""
    words = _words(config)
    generator = torch.Generator().manual_seed(5)
    rows = [[words[j] for j in torch.randint(len(words), (i % 9 + 1,), generator=generator).tolist()]
            for i in range(batch)]
    src = torch.full((batch, max(map(len, rows))), config.pad_id)
    for i, row in enumerate(rows):
        src[i, : len(row)] = torch.tensor(row)
    return src, rows


def _ours_config(variant: str) -> ModelConfig:
    return ModelConfig.preset("tiny", **{"src_vocab_size": VOCAB, "tgt_vocab_size": VOCAB, **VARIANTS[variant]})


def _marian_hf_config():
    pad = VOCAB - 1  # Marian: </s> 0, <unk> 1, <pad> last, decoding starts with <pad>
    return transformers.MarianConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        pad_token_id=pad, decoder_start_token_id=pad, eos_token_id=0, activation_function="swish")


def _model(variant: str):
    """(model, config, tokenizer): one of ours, or a random-weight Hugging Face Marian model converted."""
    if variant == "imported-marian":
        hf_config = _marian_hf_config()
        model = model_from_hf(transformers.MarianMTModel(hf_config))
        config = model_config_from_hf(hf_config.to_dict(), output_bias=True)
        specials = {0: "</s>", 1: "<unk>", VOCAB - 1: "<pad>"}
    else:
        config = _ours_config(variant)
        model, specials = build_model(config), None
    return _copy_trained(model, config), config, _tokenizer(config, specials)


@pytest.fixture(scope="module", params=[*VARIANTS, "imported-marian"])
def exported(request, tmp_path_factory):
    model, config, tokenizer = _model(request.param)
    out = export_ct2(model, config, tokenizer, tmp_path_factory.mktemp("ct2") / "ctranslate2")
    return model, config, Ct2Translator(out)


def _ids(config: ModelConfig) -> dict:
    return dict(pad_id=config.pad_id, bos_id=config.bos_id, eos_id=config.eos_id)


def test_greedy_tokens_and_log_probs_equal_ours(exported):
    model, config, translator = exported
    src, rows = _sources(config)
    theirs = translator.translate_ids(rows, DecodeConfig(beam=1, alpha=0.0, **DECODE))
    assert [h.tokens for h in theirs] == greedy_search(model, src, **_ids(config), **DECODE)
    assert len({len(h.tokens) for h in theirs}) >= 3  # EOS at different steps, and cuts at the limit
    ours = [best[0] for best in beam_search(model, src, **_ids(config), beam_size=1, alpha=0.0, **DECODE)]
    torch.testing.assert_close(torch.tensor([h.log_prob for h in theirs]), torch.tensor([h.log_prob for h in ours]),
                               atol=1e-4, rtol=1e-4)


def test_beam_4_at_alpha_0_gives_our_best_hypothesis_and_log_prob(exported):
    model, config, translator = exported
    src, rows = _sources(config)
    theirs = translator.translate_ids(rows, DecodeConfig(beam=4, alpha=0.0, batch_size=4, **DECODE))
    ours = [best[0] for best in beam_search(model, src, **_ids(config), beam_size=4, alpha=0.0, **DECODE)]
    assert [h.tokens for h in theirs] == [h.tokens for h in ours]
    torch.testing.assert_close(torch.tensor([h.score for h in theirs]), torch.tensor([h.score for h in ours]),
                               atol=1e-4, rtol=1e-4)


def test_alpha_is_ctranslate2s_length_penalty_log_p_over_n_to_the_alpha(exported):
    # CTranslate2: score = log P / n ** alpha, n counting EOS; ours: log P / ((5 + n) / 6) ** alpha.
    model, config, translator = exported
    src, rows = _sources(config)
    theirs = translator.translate_ids(rows, DecodeConfig(beam=4, alpha=1.0, **DECODE))
    ours = [best[0] for best in beam_search(model, src, **_ids(config), beam_size=4, alpha=1.0, **DECODE)]
    lengths = [min(len(h.tokens) + 1, int(0.5 * len(row) + 3)) for h, row in zip(theirs, rows, strict=True)]
    same = [(a, b, n) for a, b, n in zip(theirs, ours, lengths, strict=True) if a.tokens == b.tokens]
    assert len(same) >= len(rows) // 2
    for a, b, n in same:
        assert a.score == pytest.approx(b.log_prob / n, abs=1e-4)
        assert b.score == pytest.approx(b.log_prob / ((5 + n) / 6))


def test_translate_keeps_the_input_order_and_detokenizes(exported):
    model, config, translator = exported
    words = [translator.tokenizer.hf_tokenizer.id_to_token(i) for i in _words(config)]
    lines = [" ".join(words[j % len(words)] for j in range(i, i + 1 + i % 6)) for i in range(9)]
    decode = DecodeConfig(beam=2, alpha=0.0, batch_size=3, **DECODE)
    assert translator.translate(lines, decode) == translate(model, translator.tokenizer, lines, decode)


# ------------------------------------------------------------------------------------------------ export


def test_the_export_directory_holds_spec_vocabularies_tokenizer_and_ids(tmp_path):
    config = _ours_config("separate-untied-bias")
    out = export_ct2(build_model(config), config, _tokenizer(config), tmp_path / "ct2", quantization="int8")
    assert {p.name for p in out.iterdir()} == {"model.bin", "config.json", "source_vocabulary.json",
                                               "target_vocabulary.json", "tokenizer.json", "target_tokenizer.json",
                                               "transformer.json"}
    settings = json.loads((out / "config.json").read_text())
    specials = (settings["eos_token"], settings["decoder_start_token"], settings["unk_token"])
    assert specials == ("<eos>", "<bos>", "<unk>")
    assert len(json.loads((out / "source_vocabulary.json").read_text())) == 30
    assert json.loads((out / "transformer.json").read_text()) == {
        "pad_id": 0, "bos_id": 1, "eos_id": 2, "max_positions": 1024, "quantization": "int8"}
    assert not list(tmp_path.glob(".*partial"))


def test_vocabulary_gives_every_id_one_distinct_string():
    tokenizer = _word_tokenizer(5, {0: "<pad>", 1: "<unused_5>"})  # ids 5 and 6 are the model's alone
    assert vocabulary(tokenizer, 7) == ["<pad>", "<unused_5>", "w2", "w3", "w4", "<unused_5>_", "<unused_6>"]


def test_an_option_ctranslate2_cannot_express_is_named():
    config = ModelConfig.preset("tiny", src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, n_encoder_layers=0)
    with pytest.raises(ValueError, match=r"^model.n_encoder_layers=0 cannot be exported: a CTranslate2 encoder"):
        check_expressible(config)


def test_quantization_choices_are_ctranslate2s():
    import ctranslate2.specs.model_spec

    assert set(QUANTIZATIONS) == set(ctranslate2.specs.model_spec.ACCEPTED_MODEL_TYPES)
    assert cli.CT2_QUANTIZATIONS == list(QUANTIZATIONS)


def test_a_source_longer_than_the_position_table_is_refused_before_ctranslate2(tmp_path):
    config = ModelConfig.preset("tiny", src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, max_positions=8,
                                positional="learned")
    translator = Ct2Translator(export_ct2(build_model(config), config, _tokenizer(config), tmp_path / "ct2"))
    with pytest.raises(ValueError, match=r"need more than the export's 8 positions"):
        translator.translate_ids([[5] * 9], DecodeConfig(beam=1, max_len_a=0, max_len_b=2))
    assert len(translator.translate_ids([[5] * 6], DecodeConfig(beam=1, max_len_a=0, max_len_b=8))) == 1


def test_sinusoidal_models_export_positions_beyond_max_positions(tmp_path):
    config = ModelConfig.preset("tiny", src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, max_positions=8)
    translator = Ct2Translator(export_ct2(build_model(config), config, _tokenizer(config), tmp_path / "ct2"))
    assert translator.max_positions == 1024
    assert len(translator.translate_ids([[5] * 20], DecodeConfig(beam=1, max_len_a=0, max_len_b=30))) == 1


# -------------------------------------------------------------------------------------------------- CLI


def test_export_ct2_then_translate_and_evaluate_with_the_ctranslate2_engine(model_dir, tmp_path, capsys):
    assert main(["export-ct2", "--model", str(model_dir)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["out"] == str(model_dir / "ctranslate2")
    source = tmp_path / "in.txt"
    source.write_text("haus baum\nwort gott licht\nerde\nhimmel mann frau katze hund wasser\n", encoding="utf-8")
    for beam in ("1", "2"):
        outputs = {}
        for engine in ("torch", "ctranslate2"):
            outputs[engine] = tmp_path / f"{engine}-{beam}.txt"
            assert main(["translate", "--model", str(model_dir), "--engine", engine, "--beam", beam, "--alpha", "0",
                         "--input", str(source), "--output", str(outputs[engine])]) == 0
        assert outputs["ctranslate2"].read_text(encoding="utf-8") == outputs["torch"].read_text(encoding="utf-8")
    assert main(["evaluate", "--model", str(model_dir), "--engine", "ctranslate2", "--limit", "5"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["n"] == 5 and {"bleu", "chrf", "beam"} <= set(record)
    translator, config = load_ct2_dir(model_dir)
    assert translator.max_positions == config.model.max_positions


def test_export_ct2_int8_to_another_directory_translates(model_dir, tmp_path, capsys):
    out = tmp_path / "int8"
    assert main(["export-ct2", "--model", str(model_dir), "--out", str(out), "--quantization", "int8"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["quantization"] == "int8"
    model, tokenizer, config = load_model_dir(model_dir)
    lines = ["haus baum", "wort gott licht"]
    assert len(Ct2Translator(out).translate(lines, config.decode)) == 2


def test_an_imported_marian_directory_translates_as_the_torch_engine(tmp_path, capsys):
    words = ["</s>", "<unk>", *(f"w{i}" for i in range(17)), "<pad>"]  # Marian: </s> 0, <unk> 1, <pad> last
    hf_config = transformers.MarianConfig(
        vocab_size=len(words), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32,
        pad_token_id=len(words) - 1, decoder_start_token_id=len(words) - 1, eos_token_id=0)
    transformers.MarianMTModel(hf_config).save_pretrained(tmp_path / "hf")
    tokenizer = HFTokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(tmp_path / "hf" / "tokenizer.json"))
    model_dir = tmp_path / "model"
    assert main(["import-hf", str(tmp_path / "hf"), "--out", str(model_dir), "--set", "decode.max_len_b=6"]) == 0
    assert main(["export-ct2", "--model", str(model_dir)]) == 0
    (tmp_path / "in.txt").write_text("w3 w4 w5\nw6\nw7 w8 w9 w10 w11\n", encoding="utf-8")
    for engine in ("torch", "ctranslate2"):
        assert main(["translate", "--model", str(model_dir), "--engine", engine, "--beam", "3", "--alpha", "0",
                     "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / f"{engine}.txt")]) == 0
    assert (tmp_path / "ctranslate2.txt").read_text() == (tmp_path / "torch.txt").read_text()


def test_user_errors_exit_2_with_one_line(model_dir, tmp_path, capsys, monkeypatch):
    def error(argv: list[str]) -> str:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        return err

    assert "is not a model directory" in error(["export-ct2", "--model", str(tmp_path / "missing")])
    (tmp_path / "taken").mkdir()
    assert "already exists; choose another --out" in error(
        ["export-ct2", "--model", str(model_dir), "--out", str(tmp_path / "taken")])
    assert "is not a model directory" in error(["translate", "--model", str(tmp_path / "missing"), "--engine",
                                                "ctranslate2"])
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_text((model_dir / "config.yaml").read_text())
    assert f"`transformer export-ct2 --model {bare}`" in error(["translate", "--model", str(bare), "--engine",
                                                                 "ctranslate2"])
    assert "--weights applies to the torch engine" in error(
        ["evaluate", "--model", str(model_dir), "--engine", "ctranslate2", "--weights", "other.safetensors"])
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # import ctranslate2 now raises ImportError
    assert "pip install 'transformer[ct2]'" in error(["export-ct2", "--model", str(model_dir), "--out",
                                                      str(tmp_path / "none")])
