"""`transformer export-hf` of encoder-only models as BERT: what transformers.BertForMaskedLM /
BertForSequenceClassification load from the written directory gives our logits, for a model imported from
BERT and for models we trained; options BERT cannot express are refused by name."""

import shutil

import pytest
import torch
import yaml

transformers = pytest.importorskip("transformers")

from tests.corpus import mlm_config, write_text_corpus  # noqa: E402
from tests.interop.test_hf_bert import TEXTS, batch, save_bert  # noqa: E402
from transformer.api import load  # noqa: E402
from transformer.cli import main  # noqa: E402
from transformer.config import RunConfig  # noqa: E402

ATOL = 1e-4


def export(model_dir, out):
    assert main(["export-hf", "--model", str(model_dir), "--out", str(out)]) == 0
    return out


def hf_outputs(out, cls, texts=TEXTS):
    """The exported directory's logits for `texts`, tokenized by its own tokenizer (padding in the batch)."""
    inputs = transformers.AutoTokenizer.from_pretrained(out)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return inputs, cls.from_pretrained(out).eval()(**inputs).logits


def test_imported_bert_round_trips(tmp_path):
    """BERT -> import-hf -> export-hf -> BERT: the same logits as the original (MLM and classifier)."""
    for cls, changes in ((transformers.BertForMaskedLM, {}),
                         (transformers.BertForMaskedLM, {"tie_word_embeddings": False}),
                         (transformers.BertForSequenceClassification, {"id2label": {0: "no", 1: "yes"}})):
        name = cls.__name__ + str(len(changes))
        original = save_bert(tmp_path / name, cls, **changes)
        assert main(["import-hf", str(original), "--out", str(tmp_path / f"ours-{name}")]) == 0
        out = export(tmp_path / f"ours-{name}", tmp_path / f"back-{name}")
        inputs, logits = hf_outputs(out, cls)
        _, expected = hf_outputs(original, cls)
        real = inputs["attention_mask"].bool()
        if logits.dim() == 3:
            logits, expected = logits[real], expected[real]
        assert torch.allclose(logits, expected, atol=ATOL)
    assert cls.from_pretrained(out).config.id2label == {0: "no", 1: "yes"}


def test_trained_classifier_exports_with_our_tokenizer(classifier_dir, tmp_path):
    """Our trained classifier (byte-level BPE, relu, no token types, no output bias) as
    BertForSequenceClassification: its tokenizer gives our <bos> ids <eos>, its logits are ours."""
    ours = load(classifier_dir)
    out = export(classifier_dir, tmp_path / "hf")
    texts = ["the man went home.", "a woman wept by the river.", "he spoke"]
    inputs, logits = hf_outputs(out, transformers.BertForSequenceClassification, texts)
    tokens, real = batch(ours.tokenizer, texts)
    assert inputs["input_ids"].tolist() == tokens.tolist()
    with torch.no_grad():
        expected = ours.model.classify(tokens)
    assert torch.allclose(logits, expected, atol=ATOL)
    assert list(transformers.AutoConfig.from_pretrained(out).id2label.values()) == list(ours.config.model.labels)


def test_trained_bert_compatible_mlm_exports(tmp_path):
    """A model we pretrain with BERT's options (GELU, post-LN, learned positions, embedding LayerNorm, token
    types) exports to a BertForMaskedLM with our MLM logits."""
    from transformer.training.trainer import train

    tree = mlm_config(write_text_corpus(tmp_path), max_steps=3, eval_every=3)
    tree["model"] |= {"activation": "gelu", "type_vocab_size": 2}
    train(RunConfig.from_dict(tree), tmp_path / "run", progress_bar=False)
    ours = load(tmp_path / "run")
    out = export(tmp_path / "run", tmp_path / "hf")
    texts = ["in the beginning", "and the earth was without form"]
    inputs, logits = hf_outputs(out, transformers.BertForMaskedLM, texts)
    tokens, real = batch(ours.tokenizer, texts)
    with torch.no_grad():
        expected = ours.model(tokens)
    assert inputs["input_ids"].tolist() == tokens.tolist()
    assert torch.allclose(logits[real], expected[real], atol=ATOL)


def test_trained_relu_mlm_is_refused(bert_dir, tmp_path):
    """The tiny trained MLM uses relu: BERT's hidden_act would also change its MLM head (ours is GELU)."""
    assert main(["export-hf", "--model", str(bert_dir), "--out", str(tmp_path / "hf")]) == 2
    assert not (tmp_path / "hf").exists()
    with pytest.raises(ValueError, match=r"model.activation='relu' \(BERT's hidden_act is also its MLM head"):
        from transformer.interop.hf_bert import export_bert

        (tmp_path / "empty").mkdir()
        export_bert(bert_dir, tmp_path / "empty")


@pytest.mark.parametrize("changes, named", [
    ({"norm_first": True}, "model.norm_first=True (BERT is post-LN"),
    ({"positional": "sinusoidal"}, "model.positional='sinusoidal' (BERT learns absolute positions"),
    ({"layernorm_embedding": False}, "model.layernorm_embedding=False (BERT normalizes its embeddings"),
    ({"scale_embedding": True}, "model.scale_embedding=True (BERT does not scale"),
])
def test_options_bert_cannot_express_are_refused(classifier_dir, tmp_path, changes, named):
    model_dir = tmp_path / "model"
    shutil.copytree(classifier_dir, model_dir)
    tree = yaml.safe_load((model_dir / "config.yaml").read_text())
    tree["model"] |= changes
    (model_dir / "config.yaml").write_text(yaml.safe_dump(tree))
    from transformer.interop.export_hf import export_hf

    with pytest.raises(ValueError, match="cannot be written as BertForSequenceClassification") as error:
        export_hf(model_dir, tmp_path / "hf")
    assert named in str(error.value)
    assert not (tmp_path / "hf").exists()
