"""Relative position buckets as an additive attention bias (T5: Raffel et al., 2020, section 2.1).

Instead of adding positions to the embeddings, each head adds a learned scalar to the score of query i and
key j, chosen by the bucket of the distance j - i: distances below max_exact = buckets/2 (per direction)
have a bucket each, longer ones share logarithmically wider buckets up to `max_distance`, beyond which all
fall into the last one. Bidirectional (encoder) attention spends half the buckets on keys after the query;
causal (decoder) attention uses them all for keys at or before it. T5 computes the bias once per stack, in
its first layer, and every layer adds the same bias.

Shapes: H heads, T queries, S keys.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def relative_position_bucket(relative_position: Tensor, bidirectional: bool, num_buckets: int = 32,
                             max_distance: int = 128) -> Tensor:
    """The bucket, in [0, num_buckets), of each distance key - query (an integer tensor of any shape)."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets  # keys after the query: upper half
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)  # keys after the query (masked anyway) -> distance 0
    max_exact = num_buckets // 2
    # Distances max_exact .. max_distance spread logarithmically over the remaining buckets.
    log_ratio = torch.log(distance.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + (log_ratio * (num_buckets - max_exact)).long()).clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class RelativePositionBias(nn.Module):
    """A learned (buckets, H) table: bias[h, i, j] = table[bucket(j - i), h], for query positions
    offset .. offset + T - 1 (offset: positions already in a decoding cache) and key positions 0 .. S - 1."""

    def __init__(self, n_heads: int, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128):
        super().__init__()
        if num_buckets < 2 or max_distance < 2:
            raise ValueError(f"relative positions need num_buckets >= 2 and max_distance >= 2, "
                             f"got {num_buckets} and {max_distance}")
        self.bidirectional, self.num_buckets, self.max_distance = bidirectional, num_buckets, max_distance
        self.embedding = nn.Embedding(num_buckets, n_heads)

    def forward(self, query_length: int, key_length: int, offset: int = 0) -> Tensor:
        device = self.embedding.weight.device
        queries = torch.arange(offset, offset + query_length, device=device)[:, None]  # (T, 1)
        keys = torch.arange(key_length, device=device)[None, :]  # (1, S)
        buckets = relative_position_bucket(keys - queries, self.bidirectional, self.num_buckets,
                                           self.max_distance)  # (T, S)
        return self.embedding(buckets).permute(2, 0, 1).unsqueeze(0)  # (1, H, T, S)
