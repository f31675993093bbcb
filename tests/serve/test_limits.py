"""HTTP semantics of the limits: 413 for a large body (declared or streamed), 422 naming the limit for each
field and cap, 504 past the timeout; and the settings refuse nonsense."""

import json

import pytest

from tests.serve.conftest import make_client
from transformer.serve.settings import ServeSettings


@pytest.fixture(scope="module")
def small(translation_dir):
    """The translation model behind tight limits."""
    with make_client(translation_dir, max_body_bytes=200, max_input_chars=40, max_input_tokens=6, max_nbest=2,
                     max_beam=3) as client:
        yield client


def _messages(response):
    assert response.status_code == 422, response.text
    return " ".join(error["msg"] for error in response.json()["detail"])


def test_a_body_over_the_limit_is_413_by_its_content_length(small):
    response = small.post("/api/translate", content=json.dumps({"text": "haus " * 100}),
                          headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "200 bytes" in response.json()["detail"] and "--max-body-bytes" in response.json()["detail"]


def test_a_streamed_body_over_the_limit_is_413(small):
    def chunks():  # no Content-Length: sent chunked
        yield b'{"text": "'
        for _ in range(50):
            yield b"haus haus "
        yield b'"}'

    response = small.post("/api/translate", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "--max-body-bytes" in response.json()["detail"]


def test_a_streamed_body_within_the_limit_is_translated(small):
    def chunks():
        yield b'{"text": '
        yield b'"haus baum"}'

    response = small.post("/api/translate", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 200 and isinstance(response.json()["translation"], str)


@pytest.mark.parametrize("body, expected", [
    ({"text": "haus", "nbest": 3, "beam": 3}, "nbest=3 is over this server's limit of 2 (--max-nbest)"),
    ({"text": "haus", "beam": 4}, "beam=4 is over this server's limit of 3 (--max-beam)"),
    ({"text": "haus", "nbest": 2, "beam": 1}, "nbest=2 exceeds beam=1"),
    ({"text": "haus" * 11}, "text has 44 characters; this server takes at most 40 (--max-input-chars)"),
    ({"text": "haus baum hund katze wasser licht wort"}, "this server takes at most 6 (--max-input-tokens"),
    ({"text": "haus", "nbest": 0}, "greater than or equal to 1"),
    ({"text": "haus", "n_best": 2}, "Extra inputs are not permitted"),
    ({"text": 3}, "valid string"),
    ({"nbest": 1}, "Field required"),
    ({"text": "\ud800"}, "text is not valid Unicode"),  # a lone surrogate: valid JSON, not valid UTF-8
])
def test_fields_and_caps_are_422_with_a_message_naming_the_limit(small, body, expected):
    content = json.dumps(body)  # ASCII, \u escapes: what a client that sends a lone surrogate sends
    response = small.post("/api/translate", content=content, headers={"content-type": "application/json"})
    assert expected in _messages(response)


def test_a_body_that_is_not_a_json_object_is_422(small):
    for content in (b"{not json", b"[1, 2]", b'"text"', b""):
        response = small.post("/api/translate", content=content, headers={"content-type": "application/json"})
        assert response.status_code == 422, (content, response.text)


def test_a_request_past_the_timeout_is_504(translation_dir):
    with make_client(translation_dir, timeout_s=1e-6) as client:
        response = client.post("/api/translate", json={"text": "haus baum"})
    assert response.status_code == 504 and "--timeout" in response.json()["detail"]


@pytest.mark.parametrize("settings, expected", [
    ({"max_batch": 0}, "--max-batch 0 must be at least 1"),
    ({"timeout_s": 0}, "--timeout 0 must be"),
    ({"batch_wait_ms": -1}, "--batch-wait-ms -1"),
    ({"max_nbest": 5, "max_beam": 4}, "--max-nbest 5 exceeds --max-beam 4"),
])
def test_settings_refuse_nonsense_naming_the_flag(settings, expected):
    with pytest.raises(ValueError, match=expected):
        ServeSettings(**settings)


def test_a_full_queue_is_503_with_retry_after(translation_dir):
    client = make_client(translation_dir, max_queue=1)  # no `with`: the worker does not start, nothing is taken off
    client.app.state.batcher._queue.put(None)  # one request already waiting
    response = client.post("/api/translate", json={"text": "haus"})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert "--max-queue 1" in response.json()["detail"]
