import pytest
import torch

from tests.corpus import run_config, write_corpus
from transformer.config import RunConfig

# The tests use tiny tensors, for which one thread is faster than two keeping in step.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A model directory from 4 training updates on the small synthetic corpus (tests/corpus.py)."""
    from transformer.training.trainer import train

    corpus = write_corpus(tmp_path_factory.mktemp("corpus"))
    out = tmp_path_factory.mktemp("run") / "model"
    train(RunConfig.from_dict(run_config(corpus, max_steps=4, eval_every=4)), out, progress_bar=False)
    return out
