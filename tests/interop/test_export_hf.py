"""`transformer export-hf` of encoder-decoders: our model directories (imported from random-weight Marian and
BART models, and one trained here) written as Hugging Face directories that `transformers` loads with the same
logits; and the refusals."""

import json
import re

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")  # tests.interop.test_huggingface needs it

from tests.interop.test_huggingface import VARIANTS, _randomize  # noqa: E402
from transformer.cli import main  # noqa: E402
from transformer.config import RunConfig  # noqa: E402
from transformer.inference import load_model_dir  # noqa: E402
from transformer.interop.export_hf import EXPORTERS, export_hf  # noqa: E402
from transformer.interop.huggingface import model_config_from_hf  # noqa: E402
from transformer.model_dir import read_config, save_weights  # noqa: E402
from transformer.models import build_model  # noqa: E402

CLASSES = {"marian": transformers.MarianMTModel, "bart": transformers.BartForConditionalGeneration}


def _batch(pad: int, start: int, vocab: int = 39):
    generator = torch.Generator().manual_seed(3)
    src = torch.randint(3, vocab, (3, 9), generator=generator)
    src[1, 6:] = src[2, 3:] = pad
    tgt = torch.randint(3, vocab, (3, 7), generator=generator)
    tgt[:, 0] = start
    return src, (src != pad).long(), tgt


def _imported(variant: str, tmp_path):
    """(HF model, our model directory imported from its save_pretrained directory)."""
    torch.manual_seed(0)
    hf = VARIANTS[variant]().eval()
    _randomize(hf)
    hf.save_pretrained(tmp_path / "hf")
    model, _, run = _load_without_tokenizer(tmp_path / "hf")
    out = tmp_path / "ours"
    out.mkdir()
    save_weights(model, out / "model.safetensors")
    (out / "config.yaml").write_text(run.to_yaml())
    return hf, out


def _load_without_tokenizer(hf_dir):
    """load_hf_dir without a tokenizer (these random models have none): model, None, RunConfig (beam 3)."""
    from transformer.config import DataConfig, DecodeConfig, TrainConfig
    from transformer.interop.huggingface import _convert, _read_json, _read_weights

    model, config = _convert(_read_json(hf_dir / "config.json"), _read_weights(hf_dir))
    return model, None, RunConfig(model=config, data=DataConfig(), train=TrainConfig(max_epochs=1),
                                  decode=DecodeConfig(beam=3, alpha=0.0))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_imported_marian_and_bart_exported_back_give_the_same_logits(variant, tmp_path):
    hf, ours = _imported(variant, tmp_path)
    export_hf(ours, tmp_path / "back")
    family = hf.config.model_type
    back = CLASSES[family].from_pretrained(tmp_path / "back").eval()
    assert json.loads((tmp_path / "back" / "config.json").read_text())["model_type"] == family
    config = hf.config
    src, mask, tgt = _batch(config.pad_token_id, config.decoder_start_token_id)
    with torch.no_grad():
        theirs = hf(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
        again = back(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
    assert (again - theirs).abs().max() < 1e-4
    generation = json.loads((tmp_path / "back" / "generation_config.json").read_text())
    assert (generation["num_beams"], generation["decoder_start_token_id"]) == (3, config.decoder_start_token_id)


def test_import_export_round_trip_keeps_the_model_config(tmp_path):
    hf, ours = _imported("marian-separate-vocabs-untied", tmp_path)
    export_hf(ours, tmp_path / "back")
    exported = json.loads((tmp_path / "back" / "config.json").read_text())
    assert model_config_from_hf(exported, output_bias=True) == read_config(ours).model


def test_our_trained_paper_model_exports_to_marian_with_the_same_logits(model_dir, tmp_path, capsys):
    ours, tokenizer, run = load_model_dir(model_dir)
    m = run.model
    assert (m.positional, m.sinusoidal_interleaved, m.norm_first) == ("sinusoidal", True, False)  # the paper's
    assert main(["export-hf", "--model", str(model_dir), "--out", str(tmp_path / "hf")]) == 0
    assert "config.json, generation_config.json, model.safetensors, tokenizer.json" in capsys.readouterr().out
    hf = transformers.MarianMTModel.from_pretrained(tmp_path / "hf").eval()
    lines = ["haus baum hund", "wasser licht", "gott erde himmel mann frau"]
    hf_tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(tmp_path / "hf")
    ids = tokenizer.encode_batch(lines, add_special_tokens=True)
    assert hf_tokenizer(lines)["input_ids"] == ids
    src = torch.full((3, max(map(len, ids))), m.pad_id)
    for i, row in enumerate(ids):
        src[i, : len(row)] = torch.tensor(row)
    tgt = torch.tensor([[m.bos_id, 5, 9, 12, 7]] * 3)
    with torch.no_grad():
        mine = ours(src, tgt)
        theirs = hf(input_ids=src, attention_mask=(src != m.pad_id).long(), decoder_input_ids=tgt).logits
    assert (mine - theirs).abs().max() < 1e-4


def _our_model_dir(tmp_path, **changes):
    from tests.corpus import run_config, write_corpus

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    tree = run_config(write_corpus(corpus))
    tree["model"].update(changes)
    config = RunConfig.from_dict(tree)
    out = tmp_path / "model"
    out.mkdir()
    save_weights(build_model(config.model), out / "model.safetensors")
    (out / "config.yaml").write_text(config.to_yaml())
    return out


def test_our_model_with_learned_positions_and_embedding_norm_exports_to_bart(tmp_path):
    from transformer.interop.export_hf import load_for_export

    model_dir = _our_model_dir(tmp_path, positional="learned", max_positions=40, layernorm_embedding=True,
                               activation="gelu", scale_embedding=False, tie_output=False)
    ours, run = load_for_export(model_dir)
    with torch.no_grad():  # a fresh model's LayerNorms are (1, 0); move them, as training would
        for name, p in ours.named_parameters():
            if "norm" in name:
                p.add_(torch.randn(p.shape) * 0.1)
    save_weights(ours, model_dir / "model.safetensors")
    export_hf(model_dir, tmp_path / "hf")
    hf = transformers.BartForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    m = run.model
    src, mask, tgt = _batch(m.pad_id, m.bos_id, vocab=m.src_vocab_size)
    with torch.no_grad():
        theirs = hf(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
        assert (ours(src, tgt) - theirs).abs().max() < 1e-4


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"norm_first": True}, r"model.norm_first=True \(pre-LN; Marian and BART are post-LN"),
        ({"positional": "learned"}, r"model.positional='learned' with layernorm_embedding=False and "
                                    r"share_embeddings=True \(Marian: sinusoidal without layernorm_embedding"),
        ({"layer_norm_eps": 1e-6}, r"model.layer_norm_eps=1e-06 \(Marian and BART use 1e-05\)"),
    ],
)
def test_options_marian_and_bart_lack_are_refused_by_name(changes, message, tmp_path, capsys):
    model_dir = _our_model_dir(tmp_path, **changes)
    assert main(["export-hf", "--model", str(model_dir), "--out", str(tmp_path / "hf")]) == 2
    error = capsys.readouterr().err
    assert "cannot be written as Marian or BART" in error
    assert re.search(message, error)
    assert not (tmp_path / "hf").exists()


def test_existing_output_and_types_without_exporter_are_refused(model_dir, tmp_path, monkeypatch, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "config.json").write_text("{}")
    assert main(["export-hf", "--model", str(model_dir), "--out", str(tmp_path / "full")]) == 2
    assert "exists and is not an empty directory" in capsys.readouterr().err
    assert (tmp_path / "full" / "config.json").read_text() == "{}"
    monkeypatch.delitem(EXPORTERS, "encoder_decoder")
    with pytest.raises(ValueError, match=r"model.type='encoder_decoder' has no Hugging Face exporter yet; "
                                         r"export-hf writes \["):
        export_hf(model_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()
