"""Fixtures of the server tests: apps over tiny trained model directories (tests/conftest.py's lm_dir and
bert_dir, and translation_dir here), and the offline reference (transformer.load of the same directory) their
answers are checked against."""

import pytest

from transformer.serve.settings import ServeSettings

TEXTS = ["haus baum", "wort gott licht", "katze", "himmel erde mann frau", "hund wasser", "licht licht licht",
         "frau mann", "erde"]


def make_client(model_dir, **settings):
    """A TestClient of create_app(model_dir, ServeSettings(**settings)); use it in a `with` (lifespan)."""
    from fastapi.testclient import TestClient

    from transformer.serve.app import create_app

    return TestClient(create_app(model_dir, ServeSettings(**settings)))


@pytest.fixture(scope="session")
def translation_dir(tmp_path_factory):
    """A translation model after 80 updates on tests/corpus.py's cipher (a few seconds, once for all the server
    tests): unlike the 4 updates of conftest's model_dir, which translate every text to "", its translations
    differ from text to text, so that an answer routed to the wrong caller shows."""
    from tests.corpus import run_config, write_corpus
    from transformer.config import RunConfig
    from transformer.training.trainer import train

    corpus = write_corpus(tmp_path_factory.mktemp("serve-corpus"))
    out = tmp_path_factory.mktemp("serve-run") / "model"
    train(RunConfig.from_dict(run_config(corpus, max_steps=80, eval_every=80)), out, progress_bar=False)
    return out


@pytest.fixture(scope="module")
def client(translation_dir):
    """The translation model served with the default settings."""
    with make_client(translation_dir) as c:
        yield c


@pytest.fixture(scope="module")
def offline(translation_dir):
    """The same model directory loaded as `transformer translate` loads it."""
    import transformer

    return transformer.load(translation_dir)
