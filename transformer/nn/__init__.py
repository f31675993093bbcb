"""Building blocks of the Transformer; imports torch only."""

from transformer.nn.attention import MultiHeadAttention, scaled_dot_product_attention
from transformer.nn.kv_cache import DecoderCache, KVCache
from transformer.nn.layers import Decoder, DecoderLayer, Encoder, EncoderLayer, FeedForward
from transformer.nn.masks import causal_mask, padding_mask
from transformer.nn.packed import pack_inference_weights, unpack_inference_weights
from transformer.nn.positional import (
    InputEmbedding,
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
    sinusoidal_table,
)

__all__ = [
    "Decoder", "DecoderCache", "DecoderLayer", "Encoder", "EncoderLayer", "FeedForward", "InputEmbedding", "KVCache",
    "LearnedPositionalEmbedding", "MultiHeadAttention", "SinusoidalPositionalEncoding", "TokenEmbedding",
    "causal_mask", "pack_inference_weights", "padding_mask", "scaled_dot_product_attention", "sinusoidal_table",
    "unpack_inference_weights",
]
