"""The one place a ModelConfig becomes modules."""

from __future__ import annotations

from torch import nn

from transformer.config import ModelConfig
from transformer.models.seq2seq import EncoderDecoder
from transformer.nn.layers import Decoder, DecoderLayer, Encoder, EncoderLayer
from transformer.nn.positional import (
    InputEmbedding,
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
)


def _positions(config: ModelConfig) -> nn.Module:
    if config.positional == "learned":
        return LearnedPositionalEmbedding(config.max_positions, config.d_model, config.position_offset)
    return SinusoidalPositionalEncoding(config.d_model, interleaved=config.sinusoidal_interleaved)


def _embedding(config: ModelConfig, tokens: TokenEmbedding) -> InputEmbedding:
    norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps) if config.layernorm_embedding else None
    return InputEmbedding(tokens, _positions(config), config.dropout, norm)


def build_model(config: ModelConfig) -> EncoderDecoder:
    """Build an EncoderDecoder with Xavier-uniform linear weights and N(0, d^-1/2) embeddings."""
    c = config
    layer_args = dict(
        d_model=c.d_model, n_heads=c.n_heads, d_ff=c.d_ff, dropout=c.dropout, activation=c.activation,
        norm_first=c.norm_first, eps=c.layer_norm_eps, attention_dropout=c.attention_dropout,
        activation_dropout=c.activation_dropout,
    )
    encoder = Encoder(
        [EncoderLayer(**layer_args) for _ in range(c.n_encoder_layers)],
        nn.LayerNorm(c.d_model, eps=c.layer_norm_eps) if c.norm_first else None,
    )
    decoder = Decoder(
        [DecoderLayer(**layer_args) for _ in range(c.n_decoder_layers)],
        nn.LayerNorm(c.d_model, eps=c.layer_norm_eps) if c.norm_first else None,
    )
    for module in (*encoder.modules(), *decoder.modules()):
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)

    tgt_tokens = TokenEmbedding(c.tgt_vocab_size, c.d_model, c.pad_id, c.scale_embedding)
    src_tokens = tgt_tokens if c.share_embeddings else TokenEmbedding(
        c.src_vocab_size, c.d_model, c.pad_id, c.scale_embedding
    )
    src_embed, tgt_embed = _embedding(c, src_tokens), _embedding(c, tgt_tokens)
    output_proj = nn.Linear(c.d_model, c.tgt_vocab_size, bias=c.output_bias)
    if c.output_bias:
        nn.init.zeros_(output_proj.bias)
    if c.tie_output:
        output_proj.weight = tgt_tokens.weight
    else:
        nn.init.normal_(output_proj.weight, std=c.d_model**-0.5)
    return EncoderDecoder(src_embed, tgt_embed, encoder, decoder, output_proj, pad_id=c.pad_id)
