"""A tiny EncoderDecoder must learn to copy and to reverse random sequences, to 100% exact match (greedy)."""

import pytest
import torch

from transformer.config import ModelConfig
from transformer.decoding import greedy_search
from transformer.models import build_model
from transformer.training import label_smoothed_cross_entropy, learning_rate, make_optimizer, set_learning_rate

PAD, BOS, EOS, FIRST, VOCAB = 0, 1, 2, 3, 13  # symbols 3..12


def _batch(generator: torch.Generator, size: int, task: str):
    lengths = torch.randint(3, 9, (size,), generator=generator)
    src = torch.full((size, 8), PAD)
    tgt_in = torch.full((size, 9), PAD)
    tgt_out = torch.full((size, 9), PAD)
    for i, n in enumerate(lengths.tolist()):
        seq = torch.randint(FIRST, VOCAB, (n,), generator=generator)
        out = seq if task == "copy" else seq.flip(0)
        src[i, :n] = seq
        tgt_in[i, 0], tgt_in[i, 1 : n + 1] = BOS, out
        tgt_out[i, :n], tgt_out[i, n] = out, EOS
    return src, tgt_in, tgt_out


def train_until_exact(model, optimizer, task: str, batches: torch.Generator) -> tuple[float, int]:
    """Train on fresh batches of `task` for up to 2,000 updates; every 250, the greedy exact match on 200
    held-out sequences, stopping at 100%. Returns (exact match, updates made)."""
    src, _, tgt_out = _batch(torch.Generator().manual_seed(1), 200, task)  # held out: never trained on
    expected = [[t for t in row.tolist() if t not in (PAD, EOS)] for row in tgt_out]
    exact = 0.0
    for step in range(1, 2001):
        set_learning_rate(optimizer, learning_rate(step, (step - 1) / 2000, warmup=100, peak_lr=3e-3))
        batch_src, tgt_in, batch_out = _batch(batches, 64, task)
        loss, _ = label_smoothed_cross_entropy(model(batch_src, tgt_in), batch_out, PAD, epsilon=0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 250 == 0:
            outputs = greedy_search(model, src, pad_id=PAD, bos_id=BOS, eos_id=EOS)
            exact = sum(o == e for o, e in zip(outputs, expected, strict=True)) / len(expected)
            if exact == 1.0:
                break
    return exact, step


@pytest.mark.parametrize("task", ["copy", "reverse"])
def test_tiny_model_learns_the_task_exactly(task):
    config = ModelConfig.preset("tiny", src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, dropout=0.0)
    model = build_model(config)
    optimizer = make_optimizer(model, lr=1e-3)
    exact, step = train_until_exact(model, optimizer, task, torch.Generator().manual_seed(0))
    assert exact == 1.0, f"{task}: exact match {exact:.1%} after {step} updates"
