"""Fuzzing /api/translate with random JSON bodies and bytes: whatever arrives, the server answers 200, 400 (bytes
that are not UTF-8), 413 or 422, never 500, and every 200 is a well-formed answer; /api/generate likewise."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serve.conftest import make_client

_clients = {}

scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8),
                                                                                            inner, max_size=3),
                      max_leaves=6)
words = st.sampled_from(["haus", "baum", "wort", "licht", "gott", "x", "", " ", "\n", "ü", "\ud800", "🙂", "\x00"])
plausible = st.fixed_dictionaries(
    {"text": st.lists(words, max_size=8).map(" ".join) | st.text(max_size=40)},
    optional={"nbest": st.integers(-2, 12) | values, "beam": st.none() | st.integers(-2, 20) | values,
              "attention": st.booleans() | values})
bodies = plausible | st.dictionaries(st.sampled_from(["text", "nbest", "beam", "attention", "other"]), values,
                                     max_size=5) | values


def _client(translation_dir):
    if translation_dir not in _clients:  # one app for every example (a fixture would be reset per example)
        _clients[translation_dir] = make_client(translation_dir, max_beam=4, max_nbest=3, max_body_bytes=2000)
    return _clients[translation_dir]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_random_json_bodies_never_make_the_server_fail(translation_dir, body):
    content = json.dumps(body)  # NaN and Infinity as Python writes them: JSON that Python's parser accepts
    response = _client(translation_dir).post("/api/translate", content=content,
                                       headers={"content-type": "application/json"})
    assert response.status_code in (200, 413, 422), (body, response.status_code, response.text)
    answer = response.json()
    if response.status_code == 200:
        assert isinstance(answer["translation"], str) and answer["nbest"][0]["text"] == answer["translation"]
        assert 1 <= len(answer["nbest"]) <= 3
    else:
        assert answer["detail"]


@given(raw=st.binary(max_size=64))
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_bytes_are_a_client_error_never_500(translation_dir, raw):
    response = _client(translation_dir).post("/api/translate", content=raw,
                                             headers={"content-type": "application/json"})
    assert response.status_code in (200, 400, 422), (raw, response.status_code, response.text)  # 400: not UTF-8


numbers = st.none() | st.integers(-(2**70), 2**70) | st.floats() | st.sampled_from([0, 1, 2, 5, 0.5, 1e-9])
generate_bodies = st.fixed_dictionaries(
    {}, optional={"prompt": st.text(max_size=20), "max_new_tokens": st.integers(-1, 80) | numbers,
                  "temperature": numbers, "top_k": numbers, "top_p": numbers, "seed": numbers}) | values


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=generate_bodies)
def test_random_generate_bodies_never_make_the_server_fail(lm_dir, body):
    if lm_dir not in _clients:
        _clients[lm_dir] = make_client(lm_dir, max_new_tokens=40)
    response = _clients[lm_dir].post("/api/generate", content=json.dumps(body),
                                     headers={"content-type": "application/json"})
    assert response.status_code in (200, 422), (body, response.status_code, response.text)
    assert isinstance(response.json()["text" if response.status_code == 200 else "detail"], str | list)
