"""Additive attention (Bahdanau, Cho and Bengio 2015, "Neural Machine Translation by Jointly Learning to Align and
Translate", section 3.1 and appendix A.1.2): the attention the Transformer's dot-product attention replaced.

    e_ij = v^T tanh(W s_i + U h_j)        alpha_ij = softmax_j(e_ij)        c_i = sum_j alpha_ij h_j

s_i is a decoder state (the query), h_j an encoder state (key and value at once). U h_j does not depend on the
query, so `project_keys` computes it once per source and every decoding step reuses it.

Shapes: B batch, T queries, S keys, Dq query size, Dk key size, A attention size.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class AdditiveAttention(nn.Module):
    def __init__(self, query_size: int, key_size: int, attention_size: int):
        super().__init__()
        self.query_proj = nn.Linear(query_size, attention_size, bias=False)  # W
        self.key_proj = nn.Linear(key_size, attention_size)  # U (its bias is the score's bias)
        self.score = nn.Linear(attention_size, 1, bias=False)  # v

    def project_keys(self, keys: Tensor) -> Tensor:
        """keys (B, S, Dk) -> U h (B, S, A), the query-independent half of the score."""
        return self.key_proj(keys)

    def forward(
        self, query: Tensor, keys: Tensor, projected_keys: Tensor | None = None, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """query (B, T, Dq), keys (B, S, Dk), mask (B, S) True where a key may be attended ->
        (context (B, T, Dk), weights (B, T, S))."""
        if projected_keys is None:
            projected_keys = self.project_keys(keys)  # (B, S, A)
        hidden = torch.tanh(self.query_proj(query).unsqueeze(2) + projected_keys.unsqueeze(1))  # (B, T, S, A)
        scores = self.score(hidden).squeeze(-1)  # (B, T, S)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        weights = torch.softmax(scores.float(), dim=-1).to(keys.dtype)  # (B, T, S)
        return weights @ keys, weights  # (B, T, Dk), (B, T, S)
