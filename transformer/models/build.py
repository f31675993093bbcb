"""The one place a ModelConfig becomes modules."""

from __future__ import annotations

from torch import nn

from transformer.config import BAG_TYPES, RECURRENT_TYPES, ModelConfig
from transformer.models.decoder_only import DecoderOnly
from transformer.models.encoder_only import EncoderOnly
from transformer.models.seq2seq import EncoderDecoder
from transformer.models.vision import VisionTransformer
from transformer.nn.layers import Decoder, DecoderLayer, Encoder, EncoderLayer, make_norm
from transformer.nn.positional import (
    InputEmbedding,
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
)
from transformer.nn.relative_position import RelativePositionBias


def _positions(config: ModelConfig) -> nn.Module | None:
    if config.positional == "relative":
        return None  # the attention adds them (the stacks' RelativePositionBias)
    if config.positional == "learned":
        return LearnedPositionalEmbedding(config.max_positions, config.d_model, config.position_offset)
    return SinusoidalPositionalEncoding(config.d_model, interleaved=config.sinusoidal_interleaved)


def _embedding(config: ModelConfig, tokens: TokenEmbedding) -> InputEmbedding:
    norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps) if config.layernorm_embedding else None
    return InputEmbedding(tokens, _positions(config), config.dropout, norm)


def _layer_args(c: ModelConfig) -> dict:
    return dict(
        d_model=c.d_model, n_heads=c.n_heads, d_ff=c.d_ff, dropout=c.dropout, activation=c.activation,
        norm_first=c.norm_first, eps=c.layer_norm_eps, attention_dropout=c.attention_dropout,
        activation_dropout=c.activation_dropout, bias=c.linear_bias, norm=c.norm, attention_scale=c.attention_scale,
        gated=c.gated_ffn,
    )


def _stack(c: ModelConfig, kind: type[Encoder] | type[Decoder], n_layers: int) -> Encoder | Decoder:
    """N layers; pre-LN stacks end with a LayerNorm. Relative positions: one bias for the stack, bidirectional
    in the encoder, causal in the decoder."""
    layer = EncoderLayer if kind is Encoder else DecoderLayer
    relative = None
    if c.positional == "relative":
        relative = RelativePositionBias(c.n_heads, kind is Encoder, c.relative_buckets, c.relative_max_distance)
    return kind([layer(**_layer_args(c)) for _ in range(n_layers)],
                make_norm(c.norm, c.d_model, c.layer_norm_eps) if c.norm_first else None, relative)


def _init_linears(*stacks: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every linear layer of `stacks`, in order."""
    for module in (m for stack in stacks for m in stack.modules()):
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def output_projection(c: ModelConfig, tokens: TokenEmbedding) -> nn.Linear:
    """Hidden states -> logits, sharing the token embedding's matrix when tie_output (section 3.4)."""
    output_proj = nn.Linear(c.d_model, c.tgt_vocab_size, bias=c.output_bias)
    if c.output_bias:
        nn.init.zeros_(output_proj.bias)
    if c.pad_logit is not None:  # a buffer: the logit of <pad> stays fixed (and every other one unbiased)
        fixed = output_proj.weight.new_zeros(c.tgt_vocab_size)
        fixed[c.pad_id] = c.pad_logit
        del output_proj.bias
        output_proj.register_buffer("bias", fixed)
    if c.tie_output:
        output_proj.weight = tokens.weight
    else:
        nn.init.normal_(output_proj.weight, std=c.d_model**-0.5)
    return output_proj


def build_model(config: ModelConfig) -> EncoderDecoder | DecoderOnly | EncoderOnly | VisionTransformer:
    """The model `config.type` names, with Xavier-uniform linear weights and N(0, d^-1/2) embeddings."""
    c = config
    if c.type in RECURRENT_TYPES:  # what came before the Transformer (issue #14)
        from transformer.models.recurrent import build_recurrent
        return build_recurrent(c)
    if c.type in BAG_TYPES:
        from transformer.models.bag_of_words import build_bag_classifier
        return build_bag_classifier(c)
    if c.type == "vision":
        stack = _stack(c, Encoder, c.n_layers)  # every patch sees every other: no mask
        _init_linears(stack)
        return VisionTransformer(c.image_size, c.patch_size, c.channels, c.n_classes, stack, c.d_model, c.dropout)
    if c.type == "encoder_only":
        tokens = TokenEmbedding(c.tgt_vocab_size, c.d_model, c.pad_id, c.scale_embedding)
        stack = _stack(c, Encoder, c.n_layers)  # a padding mask only: every token sees the whole segment
        _init_linears(stack)
        return EncoderOnly(_embedding(c, tokens), stack, output_projection(c, tokens), c.d_model,
                           c.type_vocab_size, c.n_classes, c.dropout, c.layer_norm_eps, pad_id=c.pad_id,
                           pooling=c.pooling)
    if c.type == "decoder_only":
        tokens = TokenEmbedding(c.tgt_vocab_size, c.d_model, c.pad_id, c.scale_embedding)
        stack = _stack(c, Encoder, c.n_layers)  # encoder layers; the model gives them a causal mask
        _init_linears(stack)
        return DecoderOnly(_embedding(c, tokens), stack, output_projection(c, tokens), pad_id=c.pad_id)
    encoder, decoder = _stack(c, Encoder, c.n_encoder_layers), _stack(c, Decoder, c.n_decoder_layers)
    _init_linears(encoder, decoder)
    tgt_tokens = TokenEmbedding(c.tgt_vocab_size, c.d_model, c.pad_id, c.scale_embedding)
    src_tokens = tgt_tokens if c.share_embeddings else TokenEmbedding(
        c.src_vocab_size, c.d_model, c.pad_id, c.scale_embedding
    )
    src_embed, tgt_embed = _embedding(c, src_tokens), _embedding(c, tgt_tokens)
    return EncoderDecoder(src_embed, tgt_embed, encoder, decoder, output_projection(c, tgt_tokens), pad_id=c.pad_id,
                          output_scale=c.output_scale)
