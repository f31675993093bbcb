"""What a recurrent decoder carries from one decoding step to the next (models/recurrent.py), and the bridge
that gives it its first state.

A recurrent decoder needs no keys and values of past positions, as the Transformer's does (nn/kv_cache.py): its
whole past is its hidden state s_{i-1}. The cache holds that state, and, with attention, the projected encoder
states U h_j of the additive score, which do not depend on the step and are computed once per source.

Shapes: L decoder layers, B rows (examples or beams), H hidden size, S source length, A attention size,
D' encoder state size (2H bidirectional, else H).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

# The hidden state of a torch RNN: h (L, B, H), or (h, c) for an LSTM, whose cell c travels with h.
State = Tensor | tuple[Tensor, Tensor]


@dataclass(frozen=True)
class RecurrentCache:
    """The decoder state after the tokens seen so far, and what it reads of the source at every step: the
    projected keys of the additive score (with attention) or the fixed context vector c (without)."""

    state: State  # h (L, B, H), or (h, c) for an LSTM
    projected_keys: Tensor | None = None  # U h_j (B, S, A) of the additive score; None without attention
    context: Tensor | None = None  # c (B, D'), the summary of the source; None with attention

    def reorder(self, index: Tensor) -> RecurrentCache:
        """The cache of rows `index` (N,): the beams' parents, or the examples still decoding."""
        state = tuple(s.index_select(1, index) for s in self.state) if isinstance(self.state, tuple) \
            else self.state.index_select(1, index)  # (L, N, H)
        keys = None if self.projected_keys is None else self.projected_keys.index_select(0, index)  # (N, S, A)
        context = None if self.context is None else self.context.index_select(0, index)  # (N, D')
        return RecurrentCache(state, keys, context)


class Bridge(nn.Module):
    """The decoder's initial state from a summary of the source: s_0 = tanh(W_s c) for each decoder layer (and
    the LSTM's cell as well), as Bahdanau et al. (2015, appendix A.2.2) start from tanh(W_s ←h_1) and Cho et al.
    (2014) from tanh(V' c).

    The summary c (B, D') is [→h_{T_x}; ←h_1]: the forward RNN's state after the last source word and the
    backward RNN's after the first (top encoder layer), or →h_{T_x} alone for a unidirectional encoder.
    """

    def __init__(self, summary_size: int, hidden_size: int, n_layers: int, lstm: bool):
        super().__init__()
        self.n_layers, self.hidden_size = n_layers, hidden_size
        self.n_parts = 2 if lstm else 1  # (h, c) or h
        self.proj = nn.Linear(summary_size, self.n_parts * n_layers * hidden_size)  # W_s

    def forward(self, summary: Tensor) -> State:
        """summary c (B, D') -> h_0 (L, B, H), or (h_0, c_0) for an LSTM."""
        batch = summary.size(0)
        initial = torch.tanh(self.proj(summary))  # (B, P * L * H)
        parts = initial.view(batch, self.n_parts, self.n_layers, self.hidden_size).permute(1, 2, 0, 3)  # (P, L, B, H)
        parts = parts.contiguous()
        return (parts[0], parts[1]) if self.n_parts == 2 else parts[0]


def source_summary(memory: Tensor, lengths: Tensor, bidirectional: bool) -> Tensor:
    """The summary c of each source, read out of the encoder states `memory` (B, S, D'): →h at its last real
    word (position lengths - 1, right padding after it) and, bidirectional, ←h at its first -> (B, D')."""
    hidden = memory.size(-1) // 2 if bidirectional else memory.size(-1)
    rows = torch.arange(memory.size(0), device=memory.device)
    forward_last = memory[rows, lengths - 1, :hidden]  # (B, H) →h_{T_x}
    if not bidirectional:
        return forward_last
    return torch.cat([forward_last, memory[:, 0, hidden:]], dim=-1)  # (B, 2H) [→h_{T_x}; ←h_1]
