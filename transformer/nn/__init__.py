"""Building blocks of the Transformer; imports torch only."""

from transformer.nn.attention import KVCache, MultiHeadAttention, scaled_dot_product_attention
from transformer.nn.layers import Decoder, DecoderLayer, Encoder, EncoderLayer, FeedForward
from transformer.nn.masks import causal_mask, padding_mask
from transformer.nn.positional import (
    InputEmbedding,
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
    sinusoidal_table,
)

__all__ = [
    "Decoder", "DecoderLayer", "Encoder", "EncoderLayer", "FeedForward", "InputEmbedding", "KVCache",
    "LearnedPositionalEmbedding", "MultiHeadAttention", "SinusoidalPositionalEncoding", "TokenEmbedding",
    "causal_mask", "padding_mask", "scaled_dot_product_attention", "sinusoidal_table",
]
