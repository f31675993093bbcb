import pytest
import torch

# The tests use tiny tensors, for which one thread is faster than two keeping in step.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
