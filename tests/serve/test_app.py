"""Every endpoint's happy path answers what offline decoding of the same input gives (translate,
translate_scored, generate, embed), and a model kind answers only its own endpoints."""

from dataclasses import replace

import pytest
import torch

import transformer
from tests.serve.conftest import TEXTS, make_client
from transformer.inference import translate, translate_scored


def _offline_translate(offline, text, **decode):
    c = offline.config
    return translate(offline.model, offline.tokenizer, [text], replace(c.decode, **decode), c.data.max_len)[0]


def _offline_scored(offline, text, nbest, **decode):
    c = offline.config
    return translate_scored(offline.model, offline.tokenizer, [text], replace(c.decode, **decode), c.data.max_len,
                            n_best=nbest)[0]


def test_translate_defaults_equal_offline_translate(client, offline):
    translations = set()
    for text in TEXTS[:4]:
        response = client.post("/api/translate", json={"text": text})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["translation"] == _offline_translate(offline, text)
        translations.add(body["translation"])
        assert len(body["nbest"]) == 1 and body["nbest"][0]["text"] == body["translation"]
        assert body["attention"] is None
    assert len(translations) > 1  # the model tells the texts apart: equal answers are not all ""


@pytest.mark.parametrize("beam, nbest", [(1, 1), (2, 2), (3, 2)])
def test_translate_nbest_and_scores_equal_translate_scored(client, offline, beam, nbest):
    text = "wort gott licht"
    body = client.post("/api/translate", json={"text": text, "beam": beam, "nbest": nbest}).json()
    expected = _offline_scored(offline, text, nbest, beam=beam)
    assert [h["text"] for h in body["nbest"]] == [h.text for h in expected]
    assert [h["score"] for h in body["nbest"]] == pytest.approx([h.score for h in expected], abs=1e-4)
    assert body["translation"] == expected[0].text


def test_translate_without_beam_raises_the_default_beam_to_nbest(client, offline):
    default = offline.config.decode.beam
    body = client.post("/api/translate", json={"text": "haus baum", "nbest": default + 1}).json()
    expected = _offline_scored(offline, "haus baum", default + 1, beam=default + 1)
    assert [h["text"] for h in body["nbest"]] == [h.text for h in expected]


def test_info_reports_the_model_and_the_limits(client, offline):
    info = client.get("/api/info").json()
    assert info["task"] == "translation" and info["model_type"] == "encoder_decoder"
    assert info["endpoints"] == ["/api/translate"]
    assert info["decode"]["beam"] == offline.config.decode.beam
    assert info["limits"]["max_input_tokens"] == offline.config.data.max_len
    assert info["limits"]["max_nbest"] == 8 and isinstance(info["attention"], bool)
    assert client.get("/docs").status_code == 200 and "/api/translate" in client.get("/openapi.json").json()["paths"]


def test_a_translation_model_refuses_generate_and_embed_with_400(client):
    response = client.post("/api/generate", json={"prompt": "haus"})
    assert response.status_code == 400
    assert "task 'translation'" in response.json()["detail"] and "/api/translate" in response.json()["detail"]
    assert client.post("/api/embed", json={"texts": ["haus"]}).status_code == 400


def test_generate_equals_offline_generate_with_the_same_seed(lm_dir):
    offline = transformer.load(lm_dir)
    settings = {"prompt": "the man", "max_new_tokens": 8, "temperature": 0.8, "top_k": 5, "seed": 3}
    with make_client(lm_dir) as client:
        body = client.post("/api/generate", json=settings).json()
        assert client.post("/api/translate", json={"text": "the man"}).status_code == 400
        assert client.get("/api/info").json()["endpoints"] == ["/api/generate"]
        too_long = client.post("/api/generate", json={"prompt": "the man", "max_new_tokens": 200})
        assert too_long.status_code == 422 and "exceeds the model's 64 learned positions" in too_long.json()["detail"]
    expected = offline.generate(settings.pop("prompt"), **settings)[0]
    assert body == {"text": expected}


def test_embed_equals_offline_embed(bert_dir):
    offline = transformer.load(bert_dir)
    texts = ["the man went to the city.", "a woman wept."]
    with make_client(bert_dir) as client:
        plain = client.post("/api/embed", json={"texts": texts}).json()
        unit = client.post("/api/embed", json={"texts": texts, "normalize": True}).json()
        assert client.post("/api/generate", json={"prompt": "the"}).status_code == 400
    expected = offline.embed(texts)
    assert plain["dim"] == expected.shape[1]
    torch.testing.assert_close(torch.tensor(plain["vectors"]), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(unit["vectors"]), offline.embed(texts, normalize=True), atol=1e-5,
                               rtol=1e-4)


def test_the_web_page_is_served_at_the_root(translation_dir, tmp_path):
    (tmp_path / "index.html").write_text("<!doctype html><title>page</title><p>hello page</p>")
    (tmp_path / "app.js").write_text("console.log(1);")
    with make_client(translation_dir, static_dir=tmp_path) as client:
        assert "hello page" in client.get("/").text
        assert client.get("/app.js").text == "console.log(1);"
        assert client.get("/api/info").status_code == 200  # the mount at / does not hide the API


def test_without_a_web_page_the_root_is_a_notice(translation_dir, tmp_path):
    with make_client(translation_dir, static_dir=tmp_path / "missing") as client:
        response = client.get("/")
        assert response.status_code == 200 and "/docs" in response.text and "not installed" in response.text


def test_attention_is_the_cross_attention_of_the_best_translation(client, offline):
    from transformer.viz.attention import translation_attention

    text = "wort gott licht"
    body = client.post("/api/translate", json={"text": text, "beam": 2, "nbest": 2, "attention": True}).json()
    best = _offline_scored(offline, text, 2, beam=2)[0]
    maps = translation_attention(offline.model, offline.tokenizer, text, list(best.tokens), offline.config)
    attention = body["attention"]
    assert body["translation"] == best.text
    assert attention["source_tokens"] == maps.source_tokens and attention["target_tokens"] == maps.target_tokens
    cross = torch.tensor(attention["cross"])  # (layers, heads, T, S)
    assert cross.shape == (len(maps.cross), *maps.cross[0].shape)
    assert cross.shape[2:] == (len(maps.target_tokens), len(maps.source_tokens))
    torch.testing.assert_close(cross, torch.stack(maps.cross), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cross.sum(-1), torch.ones(cross.shape[:-1]), atol=1e-4, rtol=0)


def test_attention_of_a_text_without_tokens_is_422_and_the_translation_still_works(client, offline):
    response = client.post("/api/translate", json={"text": "", "attention": True})
    assert response.status_code == 422 and "no attention maps" in response.json()["detail"]
    body = client.post("/api/translate", json={"text": ""}).json()
    assert body["translation"] == _offline_translate(offline, "")
