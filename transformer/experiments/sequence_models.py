"""The sequence classifiers the synthetic experiments compare: an RNN, LSTM or GRU read left to right (with or
without additive attention over its states), and a Transformer (our decoder-only stack), each answering at the
sequence's last position; plus the helpers that size them to equal parameter counts and train them for equal
time.

Each classifier has `forward(ids (B, T)) -> logits (B, K)` and `forward_embedded(x (B, T, D)) -> logits`, the
second starting from the token embeddings, so that the gradient with respect to the input at each position can
be read (vanishing-gradients).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformer.model_config import ModelConfig
from transformer.models.build import build_model
from transformer.nn.additive_attention import AdditiveAttention

RECURRENT_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentClassifier(nn.Module):
    """Embedding -> a unidirectional torch.nn RNN/LSTM/GRU -> the last state (or, with attention, the last
    state's additive attention over every state, combined as tanh(W [s; c])) -> a linear layer to K classes."""

    def __init__(self, vocab: int, d: int, n_classes: int, cell: str = "lstm", attention: bool = False,
                 layers: int = 1):
        super().__init__()
        self.embedding = nn.Embedding(vocab, d)
        self.rnn = RECURRENT_CELLS[cell](d, d, num_layers=layers, batch_first=True)
        self.attention = AdditiveAttention(d, d, d) if attention else None
        self.combine = nn.Linear(2 * d, d) if attention else None
        self.head = nn.Linear(d, n_classes)

    def forward(self, ids: Tensor) -> Tensor:
        return self.forward_embedded(self.embedding(ids))  # (B, K)

    def forward_embedded(self, x: Tensor) -> Tensor:
        states, _ = self.rnn(x)  # (B, T, D)
        last = states[:, -1:]  # (B, 1, D)
        if self.attention is not None:
            context, _ = self.attention(last, states)  # (B, 1, D)
            last = torch.tanh(self.combine(torch.cat([last, context], dim=-1)))  # (B, 1, D)
        return self.head(last[:, 0])  # (B, K)


class TransformerClassifier(nn.Module):
    """Our Transformer stack (token embedding, positions, encoder layers) read by a linear layer to K classes:
    causal and read at its last position (as our decoder-only model), or (causal=False) bidirectional and read
    as the mean of its states (as an encoder). positional="none" removes the positions (the order experiment)."""

    def __init__(self, vocab: int, d: int, n_classes: int, layers: int = 2, heads: int = 4,
                 positional: str = "sinusoidal", max_positions: int = 1024, activation: str = "relu",
                 norm_first: bool = True, causal: bool = True):
        super().__init__()
        self.causal = causal
        config = ModelConfig(type="decoder_only", src_vocab_size=vocab, tgt_vocab_size=vocab, d_model=d,
                             n_heads=heads, d_ff=4 * d, n_layers=layers, dropout=0.0, activation=activation,
                             positional="sinusoidal" if positional == "none" else positional,
                             max_positions=max_positions, norm_first=norm_first, scale_embedding=False)
        model = build_model(config)
        self.tokens, self.positions, self.stack = model.embed.tokens, model.embed.positions, model.stack
        if positional == "none":
            self.positions = None
        self.head = nn.Linear(d, n_classes)

    def forward(self, ids: Tensor) -> Tensor:
        return self.forward_embedded(self.tokens(ids))  # (B, K)

    def states(self, x: Tensor) -> Tensor:
        """Token embeddings (B, T, D) -> the stack's output (B, T, D), each position seeing those before it."""
        if self.positions is not None:
            x = x + self.positions(x.size(1)).to(x.dtype)  # (B, T, D)
        if not self.causal:
            return self.stack(x, None)  # (B, T, D)
        mask = torch.ones(x.size(1), x.size(1), dtype=torch.bool, device=x.device).tril()[None, None]  # (1, 1, T, T)
        return self.stack(x, mask)  # (B, T, D)

    def forward_embedded(self, x: Tensor) -> Tensor:
        states = self.states(x)  # (B, T, D)
        return self.head(states[:, -1] if self.causal else states.mean(dim=1))  # (B, K)


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_width(build: Callable[[int], nn.Module], target: int, low: int = 4, high: int = 1024) -> int:
    """The width whose model's parameter count is nearest `target` (equal parameter counts), by bisection: the
    count grows with the width."""
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if n_parameters(build(middle)) < target else (low, middle)
    return min((low, high), key=lambda d: abs(n_parameters(build(d)) - target))


def train_for(model: nn.Module, batch: Callable[[torch.Generator], tuple[Tensor, Tensor]], *, seconds: float,
              max_steps: int, lr: float, seed: int, clip: float = 1.0) -> dict[str, float]:
    """Adam on fresh batches until `seconds` of training or `max_steps` updates, whichever comes first (equal
    training time); returns the steps made and the mean loss of the last 20 updates."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses: list[float] = []
    start, steps = time.perf_counter(), 0
    while steps < max_steps and time.perf_counter() - start < seconds:
        inputs, labels = batch(generator)
        loss = F.cross_entropy(model(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        losses.append(loss.item())
        steps += 1
    tail = losses[-20:] or [float("nan")]
    return {"steps": steps, "train_seconds": round(time.perf_counter() - start, 2),
            "final_loss": sum(tail) / len(tail)}


@torch.no_grad()
def accuracy(model: nn.Module, inputs: Tensor, labels: Tensor, batch_size: int = 256) -> float:
    model.eval()
    correct = sum(int((model(inputs[i:i + batch_size]).argmax(-1) == labels[i:i + batch_size]).sum())
                  for i in range(0, len(inputs), batch_size))
    return correct / len(inputs)


# The models of the recall experiments (long-range, vanishing-gradients), by name: "RNN", "LSTM", "GRU",
# "LSTM + attention", "Transformer" (2 layers of d_model RECALL_D); recall_widths sizes the recurrent ones to it.
RECALL_D = 64


def recall_model(name: str, width: int | None = None) -> nn.Module:
    from transformer.experiments.data import KEYS, RECALL_VOCAB

    if name == "Transformer":
        return TransformerClassifier(RECALL_VOCAB, RECALL_D, KEYS, layers=2, heads=4)
    cell = name.split(" ")[0].lower()
    return RecurrentClassifier(RECALL_VOCAB, width, KEYS, cell=cell, attention=name.endswith("attention"))


def recall_widths(names: tuple[str, ...]) -> dict[str, int]:
    """Each model's width: the Transformer's d_model, and for a recurrent one the width of equal parameters."""
    target = n_parameters(recall_model("Transformer"))
    return {n: RECALL_D if n == "Transformer" else matched_width(lambda d, n=n: recall_model(n, d), target)
            for n in names}
