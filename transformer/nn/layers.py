"""Position-wise feed-forward (section 3.3) and the encoder and decoder layers and stacks (section 3.1).

Shapes: B batch, S source length, T target length, D d_model.
Post-LN as in the paper, x = LayerNorm(x + Sublayer(x)); pre-LN option, x = x + Sublayer(LayerNorm(x)),
whose stack ends with one final LayerNorm (post-LN stacks have none).
T5's options, all off by default: RMS norms (norm="rms"), linears without biases (bias=False), a gated
feed-forward (gated=True), an attention scale other than 1/sqrt(Dh), and a relative position bias that a
stack computes once and every layer's self-attention adds (relative_position.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from transformer.nn.attention import MultiHeadAttention
from transformer.nn.dropout import Dropout
from transformer.nn.kv_cache import KVCache
from transformer.nn.packed import Packable
from transformer.nn.relative_position import RelativePositionBias
from transformer.nn.rms_norm import RMSNorm

# "swish" is x * sigmoid(x) (SiLU), the activation of the OPUS-MT Marian models; "gelu_new" is GELU's tanh
# approximation, 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), the activation of GPT-2. "leaky_relu" is
# max(x, 0.01 x) (Maas et al. 2013), compared with ReLU and GELU by `transformer experiment activations`.
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu, "gelu": F.gelu, "swish": F.silu, "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "leaky_relu": F.leaky_relu,
}


class FeedForward(Packable):
    """FFN(x) = act(x W1 + b1) W2 + b2, applied to each position separately.

    gated=True: FFN(x) = (act(x W1) * x V) W2, V being `fc1_linear` (GEGLU with GELU: Shazeer, 2020; T5 v1.1).
    """

    PACKS = {"fc1": ("fc1",), "fc2": ("fc2",)}  # (in, out) layouts for decoding (packed.py)

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "relu",
                 bias: bool = True, gated: bool = False):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not supported; choose one of {sorted(ACTIVATIONS)}")
        self.fc1 = nn.Linear(d_model, d_ff, bias=bias)
        self.fc1_linear = nn.Linear(d_model, d_ff, bias=bias) if gated else None
        self.fc2 = nn.Linear(d_ff, d_model, bias=bias)
        self.activation = ACTIVATIONS[activation]
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        fc1, fc2 = self.packed("fc1") or self.fc1, self.packed("fc2") or self.fc2
        hidden = self.activation(fc1(x))  # (B, T, d_ff)
        if self.fc1_linear is not None:
            hidden = hidden * self.fc1_linear(x)
        return fc2(self.dropout(hidden))  # (B, T, D)


class Residual(nn.Module):
    """A residual connection around a sublayer, with dropout on the sublayer output and a LayerNorm
    after the sum (post-LN, the paper) or before the sublayer (pre-LN). norm="rms": an RMSNorm (T5)."""

    def __init__(self, d_model: int, dropout: float, norm_first: bool, eps: float, norm: str = "layernorm"):
        super().__init__()
        self.norm = make_norm(norm, d_model, eps)
        self.dropout = Dropout(dropout)
        self.norm_first = norm_first

    def forward(self, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        if self.norm_first:
            out = sublayer(self._norm(x))
            return x + (self.dropout(out) if self.training else out)
        out = sublayer(x)
        return self._norm(x + (self.dropout(out) if self.training else out))

    def _norm(self, x: Tensor) -> Tensor:
        norm = self.norm  # called through F: a decoding step runs nine of these, and module calls cost
        if not isinstance(norm, nn.LayerNorm):
            return norm(x)
        return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def make_norm(kind: str, d_model: int, eps: float) -> nn.Module:
    """The paper's LayerNorm ("layernorm") or T5's RMSNorm ("rms")."""
    if kind not in ("layernorm", "rms"):
        raise ValueError(f"norm={kind!r} is not supported; use 'layernorm' or 'rms'")
    return nn.LayerNorm(d_model, eps=eps) if kind == "layernorm" else RMSNorm(d_model, eps)


class EncoderLayer(nn.Module):
    """Self-attention, then feed-forward, each inside a residual connection.

    `dropout` is the paper's P_drop on each sublayer output; `attention_dropout` drops attention weights
    and `activation_dropout` the hidden units of the feed-forward (both 0 in the paper).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.1,
        activation: str = "relu",
        norm_first: bool = False,
        eps: float = 1e-5,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        bias: bool = True,
        norm: str = "layernorm",
        attention_scale: float | None = None,
        gated: bool = False,
    ):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, attention_dropout, bias, attention_scale)
        self.self_attn_block = Residual(d_model, dropout, norm_first, eps, norm)
        self.ff = FeedForward(d_model, d_ff, activation_dropout, activation, bias, gated)
        self.ff_block = Residual(d_model, dropout, norm_first, eps, norm)
        self.attn_weights: Tensor | None = None

    def forward(
        self, x: Tensor, mask: Tensor | None = None, need_weights: bool = False, cache: KVCache | None = None,
        position_bias: Tensor | None = None,
    ) -> Tensor:
        """`cache` keeps the keys and values of earlier positions (a decoder-only model generating);
        `position_bias` (1, H, S, S) is added to the self-attention scores."""

        def attend(h: Tensor) -> Tensor:
            out, self.attn_weights = self.self_attn(h, None, mask, cache, need_weights, position_bias)
            return out

        x = self.self_attn_block(x, attend)  # (B, S, D)
        return self.ff_block(x, self.ff)  # (B, S, D)


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention over the encoder memory, then feed-forward."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.1,
        activation: str = "relu",
        norm_first: bool = False,
        eps: float = 1e-5,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        bias: bool = True,
        norm: str = "layernorm",
        attention_scale: float | None = None,
        gated: bool = False,
    ):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, attention_dropout, bias, attention_scale)
        self.self_attn_block = Residual(d_model, dropout, norm_first, eps, norm)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, attention_dropout, bias, attention_scale)
        self.cross_attn_block = Residual(d_model, dropout, norm_first, eps, norm)
        self.ff = FeedForward(d_model, d_ff, activation_dropout, activation, bias, gated)
        self.ff_block = Residual(d_model, dropout, norm_first, eps, norm)
        self.self_attn_weights: Tensor | None = None
        self.cross_attn_weights: Tensor | None = None

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        self_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: tuple[KVCache, KVCache] | None = None,
        need_weights: bool = False,
        position_bias: Tensor | None = None,
    ) -> Tensor:
        """`position_bias` (1, H, T, L) is added to the self-attention scores (none to cross-attention's)."""
        self_cache, cross_cache = cache if cache is not None else (None, None)

        def attend_self(h: Tensor) -> Tensor:
            out, self.self_attn_weights = self.self_attn(h, None, self_mask, self_cache, need_weights, position_bias)
            return out

        def attend_memory(h: Tensor) -> Tensor:
            out, self.cross_attn_weights = self.cross_attn(h, memory, memory_mask, cross_cache, need_weights)
            return out

        x = self.self_attn_block(x, attend_self)  # (B, T, D)
        x = self.cross_attn_block(x, attend_memory)  # (B, T, D)
        return self.ff_block(x, self.ff)  # (B, T, D)


class Encoder(nn.Module):
    """N encoder layers; pre-LN stacks end with a LayerNorm. Under a causal mask, with a cache per layer,
    the same stack is a decoder-only model (models/decoder_only.py)."""

    def __init__(self, layers: list[EncoderLayer], final_norm: nn.Module | None = None,
                 position_bias: RelativePositionBias | None = None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.final_norm = final_norm
        self.position_bias = position_bias  # T5: one relative bias for all the layers

    def forward(
        self, x: Tensor, mask: Tensor | None = None, need_weights: bool = False, cache: list[KVCache] | None = None
    ) -> Tensor:
        bias = None
        if self.position_bias is not None:
            offset = 0 if cache is None else cache[0].length
            bias = self.position_bias(x.size(1), offset + x.size(1), offset)  # (1, H, S, S)
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, need_weights, None if cache is None else cache[i], bias)  # (B, S, D)
        return x if self.final_norm is None else self.final_norm(x)


class Decoder(nn.Module):
    """N decoder layers; pre-LN stacks end with a LayerNorm."""

    def __init__(self, layers: list[DecoderLayer], final_norm: nn.Module | None = None,
                 position_bias: RelativePositionBias | None = None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.final_norm = final_norm
        self.position_bias = position_bias  # T5: one causal relative bias for all the layers

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        self_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: list[tuple[KVCache, KVCache]] | None = None,
        need_weights: bool = False,
    ) -> Tensor:
        bias = None
        if self.position_bias is not None:  # queries after the `offset` cached positions, keys from position 0
            offset = 0 if cache is None else cache[0][0].length
            bias = self.position_bias(x.size(1), offset + x.size(1), offset)  # (1, H, T, L)
        for i, layer in enumerate(self.layers):
            x = layer(x, memory, self_mask, memory_mask, None if cache is None else cache[i], need_weights, bias)
        return x if self.final_norm is None else self.final_norm(x)  # (B, T, D)
