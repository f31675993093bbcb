"""transformer.viz.embeddings: nearest words against scikit-learn, the analogy against its closed form, the PCA
against scikit-learn's, split words, bad words, and the `embeddings` command."""

import re

import numpy as np
import pytest
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

from transformer.cli import main
from transformer.inference import load_model_dir
from transformer.viz import embeddings as emb


@pytest.fixture(scope="module")
def table(lm_dir):
    model, tokenizer, _ = load_model_dir(lm_dir)
    return emb.model_embeddings(model, tokenizer)


def test_candidates_are_whole_word_tokens(table):
    ids = emb.candidates(table)
    tokens = [table.hf_tokenizer.id_to_token(int(i)) for i in ids]
    assert tokens and all(t.startswith("Ġ") and any(ch.isalnum() for ch in t) for t in tokens)
    assert table.hf_tokenizer.token_to_id("Ġman") in ids  # a word of the corpus, a token of its own
    assert table.hf_tokenizer.token_to_id("Ġ") not in ids  # a bare space is no word


def test_nearest_equals_sklearn_cosine_neighbours(table):
    ranked, notes = emb.nearest(table, "man", k=5)
    assert notes == []  # one token: no mean
    own = table.hf_tokenizer.token_to_id("Ġman")
    ids = np.array([i for i in emb.candidates(table) if i != own])
    search = NearestNeighbors(n_neighbors=5, metric="cosine").fit(table.matrix[ids])
    distances, found = search.kneighbors(table.matrix[[own]])
    assert [token for token, _ in ranked] == [table.label(int(ids[j])) for j in found[0]]
    np.testing.assert_allclose([s for _, s in ranked], 1 - distances[0], atol=1e-5)


def test_analogy_equals_the_closed_form(table):
    ranked, notes = emb.analogy(table, "city", "man", "son", k=4)
    assert notes == []
    unit = {}
    excluded = set()
    for word in ("city", "man", "son"):
        ids = table.hf_tokenizer.encode(" " + word).ids
        assert len(ids) == 1
        excluded |= set(ids)
        vector = table.matrix[ids].mean(0)
        unit[word] = vector / np.linalg.norm(vector)
    target = unit["city"] - unit["man"] + unit["son"]
    ids = [i for i in emb.candidates(table) if i not in excluded]
    rows = table.matrix[ids]
    cosine = rows @ target / (np.linalg.norm(rows, axis=1) * np.linalg.norm(target))
    best = np.argsort(-cosine)[:4]
    assert [token for token, _ in ranked] == [table.label(ids[j]) for j in best]
    np.testing.assert_allclose([s for _, s in ranked], cosine[best], rtol=1e-5)
    assert not {"city", "man", "son"} & {token for token, _ in ranked}


def test_pca_equals_sklearn_up_to_sign():
    vectors = np.random.default_rng(0).normal(size=(7, 12))
    ours, theirs = emb.pca_2d(vectors), PCA(n_components=2).fit_transform(vectors)
    for column in range(2):
        sign = np.sign(ours[0, column] * theirs[0, column])
        np.testing.assert_allclose(ours[:, column], sign * theirs[:, column], atol=1e-10)


def test_a_split_word_uses_the_mean_of_its_pieces_and_says_so(table):
    ids = table.hf_tokenizer.encode(" Jerusalem").ids
    assert table.hf_tokenizer.id_to_token(ids[0]) == "Ġ"  # the tiny vocabulary has no word beginning "ĠJ"
    ids = ids[1:]  # the bare space is no piece of the word
    assert len(ids) > 1
    vector, found, note = emb.word_vector(table, "Jerusalem")
    np.testing.assert_allclose(vector, table.matrix[ids].mean(0))
    match = re.fullmatch(r"'Jerusalem' is (\d+) tokens \((.+)\): using their mean", note)
    assert match and int(match.group(1)) == len(ids) and match.group(2).replace("|", "") == "Jerusalem"


@pytest.mark.parametrize("word", ["", "   "])
def test_an_empty_word_is_refused(table, word):
    with pytest.raises(ValueError, match="is empty; give a word"):
        emb.nearest(table, word)


def test_an_unknown_word_is_refused():
    hf = HFTokenizer(models.WordLevel({"[UNK]": 0, "king": 1, "queen": 2, "##s": 3}, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    table = emb.EmbeddingTable(np.eye(4) + 0.1, hf, "test")
    assert emb.candidates(table).tolist() == [1, 2]  # WordPiece-style: no [UNK], no ## continuation
    # cos((1.1, .1, .1, .1), (.1, 1.1, .1, .1)) = 0.24 / 1.24
    assert emb.nearest(table, "king", k=3)[0] == [("queen", pytest.approx(0.24 / 1.24))]
    with pytest.raises(ValueError, match="'zebra' is not in the model's vocabulary"):
        emb.nearest(table, "zebra")


def test_a_translation_model_probes_its_target_side(model_dir):
    model, tokenizer, _ = load_model_dir(model_dir)
    table = emb.model_embeddings(model, tokenizer)
    np.testing.assert_array_equal(table.matrix, model.tgt_embed.tokens.weight.detach().numpy())
    shared = model.src_embed.tokens is model.tgt_embed.tokens
    assert table.side.startswith("target side") and ("shared" in table.side) == shared


def test_command_prints_neighbours_analogies_and_draws_the_plot(lm_dir, tmp_path, capsys):
    out = tmp_path / "words.png"
    args = ["embeddings", "--model", str(lm_dir), "--nearest", "man", "--analogy", "city", "man", "son", "--k",
            "3", "--plot", "city", "man", "son", "Jerusalem", "--out", str(out)]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# ") and "whole-word tokens" in lines[0]
    assert lines[1] == "nearest to 'man'" and [line.split()[0] for line in lines[2:5]] == ["1", "2", "3"]
    assert lines[5] == "city - man + son"
    assert any(line.startswith("'Jerusalem' is ") for line in lines[9:])
    with Image.open(out) as image:
        assert image.size == (600, 500)


@pytest.mark.parametrize(("fixture", "extra", "message"), [
    ("vit_dir", ["--nearest", "man"], "no token embeddings"),
    ("lm_dir", [], "give --nearest WORD"),
    ("lm_dir", ["--plot", "son", "man"], "--plot needs --out"),
    ("lm_dir", ["--nearest", ""], "is empty"),
    ("lm_dir", ["--nearest", "man", "--k", "0"], "--k 0"),
])
def test_command_errors_are_one_line_and_exit_2(request, fixture, extra, message, capsys):
    assert main(["embeddings", "--model", str(request.getfixturevalue(fixture)), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
