import pytest
import torch

from tests.corpus import (
    classify_config,
    image_config,
    lm_config,
    mlm_config,
    run_config,
    write_corpus,
    write_labelled_corpus,
    write_text_corpus,
)
from transformer.config import RunConfig

# The tests use tiny tensors, for which one thread is faster than two keeping in step.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _trained(tmp_path_factory, tree: dict, name: str):
    """The model directory of a short training run of config `tree`."""
    from transformer.training.trainer import train

    out = tmp_path_factory.mktemp("run") / name
    train(RunConfig.from_dict(tree), out, progress_bar=False)
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A model directory from 4 training updates on the small synthetic corpus (tests/corpus.py)."""
    corpus = write_corpus(tmp_path_factory.mktemp("corpus"))
    return _trained(tmp_path_factory, run_config(corpus, max_steps=4, eval_every=4), "model")


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    """A language model's directory from 20 training updates on the tiny text corpus (tests/corpus.py)."""
    corpus = write_text_corpus(tmp_path_factory.mktemp("text"))
    return _trained(tmp_path_factory, lm_config(corpus, max_steps=20, eval_every=20), "gpt")


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    """A Vision Transformer's directory from 20 training updates on the digits."""
    return _trained(tmp_path_factory, image_config(max_steps=20, eval_every=20), "vit")


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """An encoder-only (mlm) model's directory from 20 training updates on the tiny text corpus."""
    corpus = write_text_corpus(tmp_path_factory.mktemp("text"))
    return _trained(tmp_path_factory, mlm_config(corpus, max_steps=20, eval_every=20), "bert")


@pytest.fixture(scope="module")
def labelled_corpus(tmp_path_factory):
    """The tiny grammar's sentences labelled with their verb's class, as TSV (and plain text to pretrain on)."""
    return write_labelled_corpus(tmp_path_factory.mktemp("labelled"))


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, labelled_corpus):
    """A text classifier's directory from 60 training updates on the labelled corpus."""
    return _trained(tmp_path_factory, classify_config(labelled_corpus, max_steps=60, eval_every=30), "classifier")
