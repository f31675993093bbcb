"""Decoding over one small model protocol: encode(src, src_mask) and decode_step(tokens, memory, src_mask, cache).

See `transformer.decoding.greedy` for the protocol and `transformer.decoding.beam` for the stopping rule.
"""

from transformer.decoding.beam import Hypothesis, beam_search, length_penalty
from transformer.decoding.greedy import greedy_search

__all__ = ["Hypothesis", "beam_search", "greedy_search", "length_penalty"]
