"""Parity with Hugging Face BERT: random-weight BertModel / BertForMaskedLM / BertForSequenceClassification built
from a small BertConfig, saved with save_pretrained beside a WordPiece tokenizer built here from a small
vocabulary, imported into our EncoderOnly and compared in eval mode, with padding in the batch."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer as HFTokenizer  # noqa: E402
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors  # noqa: E402

from transformer.api import load  # noqa: E402
from transformer.cli import main  # noqa: E402
from transformer.data.batching import pad_ids  # noqa: E402
from transformer.interop import load_hf_dir  # noqa: E402

WORDS = ("the cat dog sat ran on a mat rug and in house big small red blue hello world run walk talk "
         "man woman child city river ##s ##ed ##ing ##er ##ly . , ! ? ' - é 中 国").split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *[f"w{i}" for i in range(20)]]
TEXTS = ["The cat sat on the mat.", "hello world", "A big red dog ran in the house, and the small cat walked!",
         "Unknownword 中国 café"]
SMALL = dict(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
ATOL = 1e-4


def wordpiece_tokenizer():
    """A BertTokenizerFast over VOCAB, built as BERT's is (lowercasing normalizer, [CLS] X [SEP])."""
    tok = HFTokenizer(models.WordPiece({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.decoder = decoders.WordPiece()
    return transformers.BertTokenizerFast(tokenizer_object=tok, do_lower_case=True)


def randomize(hf, seed: int = 1):
    """Move every tensor away from its initialization (LayerNorms from (1, 0), the zero biases)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.1)
    return hf.eval()


def save_bert(root: Path, cls, **changes) -> Path:
    hf = randomize(cls(transformers.BertConfig(**{**SMALL, **changes})))
    hf.save_pretrained(root)
    wordpiece_tokenizer().save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bert")
    return {
        "base": save_bert(root / "base", transformers.BertModel),
        "mlm": save_bert(root / "mlm", transformers.BertForMaskedLM),
        "classifier": save_bert(root / "classifier", transformers.BertForSequenceClassification,
                                id2label={0: "negative", 1: "neutral", 2: "positive"}),
    }


def batch(tokenizer, texts=TEXTS):
    """Our batch of `texts`: [CLS] ids [SEP], right-padded, as embed and classify make it; and the real positions."""
    rows = [[tokenizer.bos_id, *ids, tokenizer.eos_id] for ids in tokenizer.encode_batch(texts)]
    tokens = pad_ids(rows, tokenizer.pad_id)
    return tokens, tokens != tokenizer.pad_id


def test_tokens_are_bert_tokenizer_ids_with_padding(dirs):
    """Our batch is exactly what BertTokenizerFast(texts, padding=True) gives, [CLS]/[SEP] and padding included."""
    _, tokenizer, _ = load_hf_dir(dirs["base"])
    tokens, real = batch(tokenizer)
    hf = transformers.AutoTokenizer.from_pretrained(dirs["base"])(TEXTS, padding=True, return_tensors="pt")
    assert tokens.tolist() == hf["input_ids"].tolist()
    assert real.long().tolist() == hf["attention_mask"].tolist()
    assert int(tokens[:, 0].unique()) == 2 and real.sum() > 12 and not real.all()  # [CLS]; padding in the batch


def test_hidden_states_and_pooled_output_match_bert_model(dirs):
    model, tokenizer, run = load_hf_dir(dirs["base"])
    hf = transformers.BertModel.from_pretrained(dirs["base"]).eval()
    tokens, real = batch(tokenizer)
    with torch.no_grad():
        expected = hf(input_ids=tokens, attention_mask=real.long())
        states, pooled = model.hidden_states(tokens), model.pooled(tokens)
    assert run.task == "mlm" and run.model.layernorm_embedding and not run.model.norm_first
    assert torch.allclose(states[real], expected.last_hidden_state[real], atol=ATOL)
    assert torch.allclose(pooled, expected.pooler_output, atol=ATOL)
    types = (torch.arange(tokens.size(1)) >= 3).long().expand_as(tokens) * real  # segment B from position 3
    with torch.no_grad():
        expected = hf(input_ids=tokens, attention_mask=real.long(), token_type_ids=types).last_hidden_state
        states = model.hidden_states(tokens, types)
    assert torch.allclose(states[real], expected[real], atol=ATOL)


@pytest.mark.parametrize("tied", [True, False])
def test_mlm_logits_match_bert_for_masked_lm(dirs, tmp_path, tied):
    """BertForMaskedLM, its decoder tied to the word embeddings (the default) or a matrix of its own."""
    hf_dir = dirs["mlm"] if tied else save_bert(tmp_path / "untied", transformers.BertForMaskedLM,
                                                 tie_word_embeddings=False)
    model, tokenizer, run = load_hf_dir(hf_dir)
    hf = transformers.BertForMaskedLM.from_pretrained(hf_dir).eval()
    assert run.model.tie_output == tied
    tokens, real = batch(tokenizer)
    tokens[1, 2] = tokenizer.mask_id  # a [MASK] in the input, as at MLM time
    with torch.no_grad():
        expected = hf(input_ids=tokens, attention_mask=real.long()).logits
        logits = model(tokens)
    assert tokenizer.mask_id == VOCAB.index("[MASK]")
    assert torch.allclose(logits[real], expected[real], atol=ATOL)
    assert logits.abs().max() > 1  # not all near zero: the head's bias and transform came through


def test_classification_logits_and_labels_match(dirs):
    model, tokenizer, run = load_hf_dir(dirs["classifier"])
    hf = transformers.BertForSequenceClassification.from_pretrained(dirs["classifier"]).eval()
    tokens, real = batch(tokenizer)
    with torch.no_grad():
        expected = hf(input_ids=tokens, attention_mask=real.long()).logits
        logits = model.classify(tokens)
    assert run.task == "classify" and run.model.labels == ("negative", "neutral", "positive")
    assert torch.allclose(logits, expected, atol=ATOL)


def test_cli_import_then_embed_and_predict(dirs, tmp_path, capsys):
    """import-hf writes our model directories; embed gives the masked mean of BertModel's states, predict
    BertForSequenceClassification's label and probability."""
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    assert main(["import-hf", str(dirs["base"]), "--out", str(tmp_path / "base")]) == 0
    assert main(["import-hf", str(dirs["classifier"]), "--out", str(tmp_path / "cls")]) == 0
    capsys.readouterr()
    assert main(["embed", "--model", str(tmp_path / "base"), "--input", str(texts)]) == 0
    vectors = torch.tensor([json.loads(line) for line in capsys.readouterr().out.splitlines()])
    assert main(["predict", "--model", str(tmp_path / "cls"), "--input", str(texts)]) == 0
    predictions = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    hf_tok = transformers.AutoTokenizer.from_pretrained(dirs["base"])
    inputs = hf_tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = transformers.BertModel.from_pretrained(dirs["base"]).eval()(**inputs).last_hidden_state
        probs = transformers.BertForSequenceClassification.from_pretrained(dirs["classifier"]).eval()(
            **inputs).logits.softmax(-1)
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    assert torch.allclose(vectors, (states * mask).sum(1) / mask.sum(1), atol=ATOL)
    labels = ("negative", "neutral", "positive")
    assert [p["label"] for p in predictions] == [labels[i] for i in probs.argmax(-1).tolist()]
    assert [p["probability"] for p in predictions] == pytest.approx(probs.max(-1).values.tolist(), abs=1e-3)


def test_vocab_txt_only_directory_gives_the_same_ids(dirs, tmp_path):
    """Without tokenizer.json, the WordPiece tokenizer built from vocab.txt (lowercasing per
    tokenizer_config.json) gives the ids BertTokenizerFast gives, and the model is the same."""
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        shutil.copy(dirs["base"] / name, bare / name)
    (bare / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    _, from_json, _ = load_hf_dir(dirs["base"])
    model, from_vocab, _ = load_hf_dir(bare)
    texts = [*TEXTS, "CAFÉ Walking  TALKER, unknown!!", "中国人 river-man's"]
    hf = transformers.AutoTokenizer.from_pretrained(dirs["base"])(texts, add_special_tokens=False)["input_ids"]
    assert from_vocab.encode_batch(texts) == from_json.encode_batch(texts) == hf
    assert (from_vocab.pad_id, from_vocab.bos_id, from_vocab.eos_id) == (0, 2, 3)
    assert from_vocab.hf_tokenizer.encode("the cat").tokens == ["[CLS]", "the", "cat", "[SEP]"]
    assert from_vocab.decode(from_vocab.encode("the cats sat")) == "the cats sat"


@pytest.mark.parametrize("changes, named", [
    (dict(position_embedding_type="relative_key"), "position_embedding_type='relative_key'"),
    (dict(is_decoder=True), "is_decoder=True"),
    (dict(add_cross_attention=True), "add_cross_attention=True"),
    (dict(hidden_act="gelu_fast"), "hidden_act='gelu_fast'"),
])
def test_unsupported_options_are_refused_by_name(dirs, tmp_path, changes, named):
    bad = tmp_path / "bad"
    shutil.copytree(dirs["base"], bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, **changes}))
    with pytest.raises(ValueError, match="options we do not support") as error:
        load_hf_dir(bad)
    assert named in str(error.value) and "supported" in str(error.value)


def test_fine_tune_imported_bert_with_init_from(dirs, tmp_path, labelled_corpus):
    """train.init_from an imported BERT: the BERT tokenizer and [CLS]/[SEP] ids carry over, a new head trains."""
    from tests.corpus import classify_config
    from transformer.config import RunConfig
    from transformer.training.trainer import train

    assert main(["import-hf", str(dirs["base"]), "--out", str(tmp_path / "base")]) == 0
    tree = classify_config(labelled_corpus, max_steps=2, eval_every=2)
    tree["model"] = {"dropout": 0.0}
    tree["train"]["init_from"] = str(tmp_path / "base")
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(tree))
    train(RunConfig.load(str(tmp_path / "ft.yaml")), tmp_path / "ft", progress_bar=False)
    tuned = load(tmp_path / "ft")
    assert (tuned.tokenizer.bos_id, tuned.tokenizer.eos_id, tuned.config.model.d_model) == (2, 3, 32)
    assert tuned.classify_texts(["the man went home."]).shape == (1, tuned.config.model.n_classes)
    start = load(tmp_path / "base").model.embed.tokens.weight  # 2 Adam updates of lr 3e-3 move a weight < 0.01
    assert torch.allclose(tuned.model.embed.tokens.weight, start, atol=0.01)


# ----------------------------------------------------------------------------------- sentence-transformers


@pytest.mark.parametrize("pooling, normalize", [("mean", True), ("cls", False), ("max", True), ("max", False)])
def test_sentence_transformers_embeddings_match(dirs, tmp_path, pooling, normalize):
    """A sentence-transformers directory (Transformer over a random BERT + Pooling (+ Normalize)) imports with its
    pooling and normalization, and `transformer embed` gives SentenceTransformer.encode's vectors."""
    st = pytest.importorskip("sentence_transformers")
    st_modules = pytest.importorskip("sentence_transformers.models")
    transformer = st_modules.Transformer(str(dirs["base"]))
    modules = [transformer, st_modules.Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling)]
    if normalize:
        modules.append(st_modules.Normalize())
    reference = st.SentenceTransformer(modules=modules, device="cpu")
    reference.save(str(tmp_path / "st"))
    expected = torch.as_tensor(reference.encode(TEXTS, convert_to_numpy=True))

    assert main(["import-hf", str(tmp_path / "st"), "--out", str(tmp_path / "ours")]) == 0
    bundle = load(tmp_path / "ours")
    assert (bundle.config.model.embed_pooling, bundle.config.model.embed_normalize) == (pooling, normalize)
    vectors = bundle.embed(TEXTS)
    cosine = torch.nn.functional.cosine_similarity(vectors, expected, dim=-1)
    assert cosine.min() >= 0.99999
    assert torch.allclose(vectors.norm(dim=-1), expected.norm(dim=-1), rtol=1e-4)  # normalized exactly when ST is


def test_sentence_transformers_unsupported_pooling_is_refused(dirs, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    st_modules = pytest.importorskip("sentence_transformers.models")
    transformer = st_modules.Transformer(str(dirs["base"]))
    pooling = st_modules.Pooling(transformer.get_embedding_dimension(), pooling_mode="weightedmean")
    st.SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(tmp_path / "st"))
    with pytest.raises(ValueError, match=r"pooling \['weightedmean'\]: only one of \['mean', 'cls', 'max'\]"):
        load_hf_dir(tmp_path / "st")


def test_cli_evaluate_imported_classifier_on_a_tsv(dirs, tmp_path, capsys):
    """import-hf --set data.* names a labelled TSV; `evaluate` scores BertForSequenceClassification's accuracy."""
    labels = ["negative", "neutral", "positive", "positive"]
    tsv = tmp_path / "test.tsv"
    tsv.write_text("".join(f"{text}\t{label}\n" for text, label in zip(TEXTS, labels, strict=True)))
    sets = [f"--set=data.{key}" for key in ("corpus=tsv", f"train_tsv={tsv}", f"test_tsv={tsv}")]
    assert main(["import-hf", str(dirs["classifier"]), "--out", str(tmp_path / "cls"), *sets]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path / "cls"), "--split", "test"]) == 0
    scores = json.loads(capsys.readouterr().out.splitlines()[-1])
    inputs = transformers.AutoTokenizer.from_pretrained(dirs["classifier"])(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        predicted = transformers.BertForSequenceClassification.from_pretrained(dirs["classifier"]).eval()(
            **inputs).logits.argmax(-1)
    names = [("negative", "neutral", "positive")[i] for i in predicted.tolist()]
    expected = sum(name == label for name, label in zip(names, labels, strict=True))
    assert scores["n"] == 4 and scores["accuracy"] == pytest.approx(expected / 4)


def test_sentence_transformers_legacy_layout_and_max_seq_length(dirs, tmp_path):
    """A directory in the layout of sentence-transformers < 6 (pooling_mode_* booleans, sentence_transformers.models.*
    module types, max_seq_length in sentence_bert_config.json): same vectors, long texts cut where ST cuts them."""
    st = pytest.importorskip("sentence_transformers")
    st_modules = pytest.importorskip("sentence_transformers.models")
    transformer = st_modules.Transformer(str(dirs["base"]))
    pooling = st_modules.Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    st.SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(tmp_path / "st"))
    root = tmp_path / "st"
    modules = json.loads((root / "modules.json").read_text())
    for module in modules:
        module["type"] = "sentence_transformers.models." + module["type"].rsplit(".", 1)[-1]
    (root / "modules.json").write_text(json.dumps(modules))
    (root / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}))
    (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 8, "do_lower_case": False}))
    reference = st.SentenceTransformer(str(root), device="cpu")
    assert reference.max_seq_length == 8
    expected = torch.as_tensor(reference.encode(TEXTS, convert_to_numpy=True))

    assert main(["import-hf", str(root), "--out", str(tmp_path / "ours")]) == 0
    bundle = load(tmp_path / "ours")
    assert (bundle.config.model.embed_pooling, bundle.config.data.max_len) == ("mean", 6)
    cosine = torch.nn.functional.cosine_similarity(bundle.embed(TEXTS), expected, dim=-1)
    assert cosine.min() >= 0.99999


def test_continue_mlm_pretraining_of_imported_bert(dirs, tmp_path):
    """task mlm with train.init_from an imported BertForMaskedLM: masking uses BERT's [MASK] id, the run trains,
    and the MLM head it starts from is BERT's (its bias came through, not a fresh zero one)."""
    from tests.corpus import mlm_config, write_text_corpus
    from transformer.config import RunConfig
    from transformer.evaluation.nll import mask_segments
    from transformer.training.trainer import train

    assert main(["import-hf", str(dirs["mlm"]), "--out", str(tmp_path / "mlm")]) == 0
    tree = mlm_config(write_text_corpus(tmp_path), max_steps=2, eval_every=2)
    tree["model"] = {}
    tree["train"]["init_from"] = str(tmp_path / "mlm")
    (tmp_path / "pt.yaml").write_text(yaml.safe_dump(tree))
    train(RunConfig.load(str(tmp_path / "pt.yaml")), tmp_path / "pt", progress_bar=False)
    tuned = load(tmp_path / "pt")
    masked = mask_segments([tuned.tokenizer.encode("the cat sat on the mat and the dog ran")] * 8, tuned.tokenizer, 0)
    assert tuned.tokenizer.mask_id == 4 and (masked.inputs == 4).any()
    assert tuned.model.output_proj.bias.abs().max() > 0.05  # BERT's randomized MLM bias, not a fresh zero one
