"""A small decoder-only Transformer (ours, models/decoder_only.py) modelling the English Bible byte by byte: the
model of the positions and activations experiments. A byte is a position, and no tokenizer stands between the
text and the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from transformer.experiments.data import byte_windows
from transformer.model_config import ModelConfig
from transformer.models.build import build_model
from transformer.models.decoder_only import DecoderOnly

BYTES = 256


def build_byte_lm(seed: int, d_model: int = 128, layers: int = 2, positional: str = "sinusoidal",
                  max_positions: int = 1024, activation: str = "relu") -> DecoderOnly:
    """Pre-LN, no dropout, d_ff = 4 d_model, 4 heads, its output tied to its byte embedding."""
    torch.manual_seed(seed)
    config = ModelConfig(type="decoder_only", src_vocab_size=BYTES, tgt_vocab_size=BYTES, d_model=d_model,
                         n_heads=4, d_ff=4 * d_model, n_layers=layers, dropout=0.0, positional=positional,
                         max_positions=max_positions, activation=activation, norm_first=True)
    return build_model(config)


def train_byte_lm(model: DecoderOnly, stream: Tensor, *, length: int, seconds: float, max_steps: int, lr: float,
                  seed: int, batch: int = 32, every: int = 0,
                  probe: Callable[[int], None] | None = None) -> dict[str, float]:
    """Adam on random `length`-byte windows of `stream` for `seconds` or `max_steps` updates, whichever comes
    first; `probe(step)` runs at step 0 and every `every` updates (and at the end)."""
    generator = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98))
    start, step, losses = time.perf_counter(), 0, []
    if probe:
        probe(0)
    while step < max_steps and time.perf_counter() - start < seconds:
        model.train()
        inputs, targets = byte_windows(stream, length, batch, generator)  # (B, L), (B, L)
        logits = model(inputs)  # (B, L, 256)
        loss = F.cross_entropy(logits.reshape(-1, BYTES), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        step += 1
        if probe and every and step % every == 0:
            probe(step)
    if probe and (not every or step % every):
        probe(step)
    tail = losses[-20:] or [float("nan")]
    return {"steps": step, "train_seconds": round(time.perf_counter() - start, 2), "final_loss": sum(tail) / len(tail)}


@torch.no_grad()
def position_losses(model: DecoderOnly, stream: Tensor, length: int, windows: int, seed: int = 0) -> Tensor:
    """The mean next-byte loss (nats) at each position of `windows` random windows of `length` bytes: (length,)."""
    model.eval()
    inputs, targets = byte_windows(stream, length, windows, torch.Generator().manual_seed(seed))
    total = torch.zeros(length)
    for i in range(0, windows, 8):
        logits = model(inputs[i:i + 8])  # (b, L, 256)
        loss = F.cross_entropy(logits.transpose(1, 2), targets[i:i + 8], reduction="none")  # (b, L)
        total += loss.sum(dim=0)
    return total / windows
