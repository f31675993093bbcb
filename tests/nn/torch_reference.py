"""Copy our weights into torch.nn's Transformer modules, so both compute from identical parameters."""

import torch
from torch import nn

from transformer.nn.attention import MultiHeadAttention
from transformer.nn.layers import DecoderLayer, EncoderLayer, FeedForward, Residual


@torch.no_grad()
def copy_attention(ours: MultiHeadAttention, theirs: nn.MultiheadAttention) -> None:
    theirs.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
    theirs.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
    theirs.out_proj.weight.copy_(ours.out_proj.weight)
    theirs.out_proj.bias.copy_(ours.out_proj.bias)


@torch.no_grad()
def copy_norm(ours: Residual, theirs: nn.LayerNorm) -> None:
    theirs.weight.copy_(ours.norm.weight)
    theirs.bias.copy_(ours.norm.bias)


@torch.no_grad()
def copy_ff(ours: FeedForward, theirs) -> None:
    for a, b in ((ours.fc1, theirs.linear1), (ours.fc2, theirs.linear2)):
        b.weight.copy_(a.weight)
        b.bias.copy_(a.bias)


def copy_encoder_layer(ours: EncoderLayer, theirs: nn.TransformerEncoderLayer) -> None:
    copy_attention(ours.self_attn, theirs.self_attn)
    copy_ff(ours.ff, theirs)
    copy_norm(ours.self_attn_block, theirs.norm1)
    copy_norm(ours.ff_block, theirs.norm2)


def copy_decoder_layer(ours: DecoderLayer, theirs: nn.TransformerDecoderLayer) -> None:
    copy_attention(ours.self_attn, theirs.self_attn)
    copy_attention(ours.cross_attn, theirs.multihead_attn)
    copy_ff(ours.ff, theirs)
    copy_norm(ours.self_attn_block, theirs.norm1)
    copy_norm(ours.cross_attn_block, theirs.norm2)
    copy_norm(ours.ff_block, theirs.norm3)


@torch.no_grad()
def randomize_norms(module: nn.Module) -> None:
    """LayerNorms start at (1, 0); perturb them so a mis-copied norm cannot pass unnoticed."""
    for m in module.modules():
        if isinstance(m, nn.LayerNorm):
            m.weight.normal_(1.0, 0.1)
            m.bias.normal_(0.0, 0.1)
