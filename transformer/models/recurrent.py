"""Recurrent encoder-decoders: the translation models the Transformer replaced (issue #14), on torch.nn.RNN (tanh),
torch.nn.LSTM or torch.nn.GRU, trained and decoded through the same protocol as the paper's model.

Encoder (Bahdanau et al. 2015, section 3.2). The source words x_1..x_{T_x} are embedded and read by a stack of
RNNs, bidirectional by default: the annotation of word j is h_j = [→h_j; ←h_j], the top layer's states of the
forward and the backward RNN. The backward RNN reads each source reversed within its length, so a source's
annotations do not depend on how far its batch is padded; the annotations of padding are 0 and never read.

Decoder without attention (Sutskever et al. 2014; Cho et al. 2014, section 2.2). The whole source passes through
one fixed vector, its summary c = [→h_{T_x}; ←h_1]. The decoder starts from s_0 = tanh(W_s c) (the bridge) and
reads c again at every step, next to the previous target word:

    s_i = RNN([E y_{i-1}; c], s_{i-1})        o_i = tanh(W_c [s_i; c])        p(y_i | y_<i, x) = softmax(W_o o_i)

Decoder with additive attention. Bahdanau et al.'s alignment model scores every annotation against the decoder
state, e_ij = v^T tanh(W s + U h_j) (nn/additive_attention.py), and the context c_i = sum_j softmax_j(e_ij) h_j
changes with i. It is placed as Luong et al. (2015) place it, after the RNN step: the query is the new state
s_i, not s_{i-1}, and o_i is not fed back (no input feeding), so the RNN reads only the target words and runs
over the whole target in one call in training:

    s_i = RNN(E y_{i-1}, s_{i-1})    c_i = sum_j alpha_ij h_j    o_i = tanh(W_c [s_i; c_i])    softmax(W_o o_i)

Both start from the bridge, s_0 = tanh(W_s c). o_i is what `decoder_states` returns; W_o is `output_proj`, tied
to the target embedding E when model.tie_output (as the Transformer's, section 3.4). d_model is the embedding and
the hidden size H.

Shapes: B batch, S source length, T target length, L layers, H hidden size (d_model), D' annotation size (2H
bidirectional, else H), V target vocabulary.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from transformer.config import ModelConfig
from transformer.models.recurrent_cache import Bridge, RecurrentCache, source_summary
from transformer.nn.additive_attention import AdditiveAttention
from transformer.nn.masks import padding_mask
from transformer.nn.positional import TokenEmbedding

# model.type -> the torch RNN that reads and writes ("rnn": Elman's, with tanh)
RNN_MODULES: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def _rnn(kind: str, input_size: int, hidden_size: int, n_layers: int, dropout: float) -> nn.RNNBase:
    """A batch-first stack of `n_layers` RNNs of type `kind`, with dropout between layers. An LSTM's forget
    gates start with bias 1 (Jozefowicz et al. 2015): early on it keeps its cell rather than forgetting it."""
    rnn = RNN_MODULES[kind](input_size, hidden_size, n_layers, batch_first=True,
                            dropout=dropout if n_layers > 1 else 0.0)
    if kind == "lstm":
        with torch.no_grad():
            for name, bias in rnn.named_parameters():
                if name.startswith("bias_hh"):  # gates i, f, g, o: f is the second quarter
                    bias[hidden_size : 2 * hidden_size].fill_(1.0)
    return rnn


def source_lengths(keep: Tensor) -> Tensor:
    """keep (B, S) True on real tokens (right padding after them) -> (B,) lengths, at least 1."""
    return keep.sum(dim=-1).clamp(min=1)


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """x (B, S, D) with each row's first `lengths` positions in reverse order, its padding left where it is: the
    backward RNN reads x_{T_x} .. x_1 first and the padding only after them. Its own inverse."""
    positions = torch.arange(x.size(1), device=x.device)  # (S,)
    index = torch.where(positions < lengths[:, None], lengths[:, None] - 1 - positions, positions)  # (B, S)
    return x.gather(1, index[:, :, None].expand_as(x))


class RecurrentEncoder(nn.Module):
    """The source reader: embeddings, then L layers of a forward RNN and (bidirectional) a backward one, each
    layer reading the concatenated states of the one below; the top layer's states are the annotations h_j.

    Each direction of each layer is one torch RNN call over the whole source (its fused kernel). The backward
    RNN reads each source reversed within its length (`reverse_padded`), so right padding comes after the
    words in both directions and changes no annotation: no packed sequences (whose CPU kernels step through
    time one small product at a time, 10-100x slower here)."""

    def __init__(self, kind: str, embed: TokenEmbedding, hidden_size: int, n_layers: int, bidirectional: bool,
                 dropout: float):
        super().__init__()
        self.embed = embed
        self.output_size = hidden_size * (2 if bidirectional else 1)  # D'
        sizes = [embed.weight.size(1)] + [self.output_size] * (n_layers - 1)  # each layer's input size
        self.forward_rnns = nn.ModuleList(_rnn(kind, size, hidden_size, 1, 0.0) for size in sizes)  # →h
        self.backward_rnns = nn.ModuleList(_rnn(kind, size, hidden_size, 1, 0.0) for size in sizes) \
            if bidirectional else None  # ←h
        self.dropout = nn.Dropout(dropout)
        self.bidirectional = bidirectional

    def forward(self, src: Tensor, keep: Tensor) -> Tensor:
        """src (B, S) ids, keep (B, S) True on real tokens -> annotations (B, S, D'), 0 on padding."""
        lengths = source_lengths(keep)  # (B,)
        x = self.dropout(self.embed(src))  # (B, S, H)
        for layer, forward_rnn in enumerate(self.forward_rnns):
            if layer > 0:
                x = self.dropout(x)  # between layers, as torch's RNNs apply their dropout
            states, _ = forward_rnn(x)  # (B, S, H) →h_j, padding read after the words
            if self.backward_rnns is not None:
                backward, _ = self.backward_rnns[layer](reverse_padded(x, lengths))  # (B, S, H) in reading order
                states = torch.cat([states, reverse_padded(backward, lengths)], dim=-1)  # (B, S, 2H) [→h_j; ←h_j]
            x = states
        return x.masked_fill(~keep[:, :, None], 0.0)  # (B, S, D')


class RecurrentDecoder(nn.Module):
    """The target writer: s_i from the previous word (and c, without attention), then o_i = tanh(W_c [s_i; c_i])
    with the fixed c or the attended c_i (module docstring)."""

    def __init__(self, kind: str, embed: TokenEmbedding, hidden_size: int, memory_size: int, n_layers: int,
                 attention: bool, bidirectional: bool, dropout: float):
        super().__init__()
        self.embed = embed
        word_size = embed.weight.size(1)
        self.rnn = _rnn(kind, word_size if attention else word_size + memory_size, hidden_size, n_layers, dropout)
        self.attention = AdditiveAttention(hidden_size, memory_size, hidden_size) if attention else None
        self.bridge = Bridge(memory_size, hidden_size, n_layers, lstm=kind == "lstm")  # W_s
        self.combine = nn.Linear(hidden_size + memory_size, hidden_size)  # W_c
        self.dropout = nn.Dropout(dropout)
        self.bidirectional = bidirectional

    def start(self, memory: Tensor, keep: Tensor) -> RecurrentCache:
        """The state before the first target word: s_0 from the summary of each source, and what every step
        reads of the source (the projected keys U h_j, or the fixed context c)."""
        summary = source_summary(memory, source_lengths(keep), self.bidirectional)  # (B, D') c
        if self.attention is None:
            return RecurrentCache(self.bridge(summary), context=summary)
        return RecurrentCache(self.bridge(summary), projected_keys=self.attention.project_keys(memory))

    def forward(self, tokens: Tensor, memory: Tensor, keep: Tensor, cache: RecurrentCache
                ) -> tuple[Tensor, RecurrentCache, Tensor | None]:
        """tokens (B, T): y_{i-1} for T steps after the state in `cache` -> (o (B, T, H), the cache after them,
        the attention weights alpha (B, T, S) or None)."""
        y = self.dropout(self.embed(tokens))  # (B, T, H) E y_{i-1}
        if self.attention is None:
            context = cache.context[:, None, :].expand(-1, tokens.size(1), -1)  # (B, T, D') c, every step
            s, state = self.rnn(torch.cat([y, context.to(y.dtype)], dim=-1), cache.state)  # (B, T, H)
            weights = None
        else:
            s, state = self.rnn(y, cache.state)  # (B, T, H), all steps in one call
            context, weights = self.attention(s, memory, cache.projected_keys, keep)  # (B, T, D'), (B, T, S)
        output = torch.tanh(self.combine(torch.cat([s, context.to(s.dtype)], dim=-1)))  # (B, T, H) o_i
        return self.dropout(output), dataclasses.replace(cache, state=state), weights


class RecurrentEncoderDecoder(nn.Module):
    """A recurrent encoder-decoder with the Transformer's interface: `encode` and `decode_step` for the
    searches (decoding/protocol.py), `forward` and `decoder_states` for teacher-forced training."""

    def __init__(self, kind: str, encoder: RecurrentEncoder, decoder: RecurrentDecoder, output_proj: nn.Linear,
                 pad_id: int = 0):
        super().__init__()
        self.kind = kind  # model.type: rnn, lstm or gru
        self.encoder, self.decoder = encoder, decoder
        self.output_proj = output_proj  # W_o (V, H)
        self.pad_id = pad_id

    def _keep(self, src_mask: Tensor | None, memory: Tensor) -> Tensor:
        """The (B, 1, 1, S) padding mask as (B, S), True on real tokens (all True when there is none)."""
        if src_mask is None:
            return torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
        return src_mask.reshape(memory.shape[:2])

    def encode(self, src: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """src (B, S) ids -> memory (B, S, D'): the annotations h_j, everything decoding reads of the source."""
        if src_mask is None:
            src_mask = padding_mask(src, self.pad_id)  # (B, 1, 1, S)
        return self.encoder(src, src_mask.reshape(src.shape))  # (B, S, D')

    def decode_step(self, tokens: Tensor, memory: Tensor, src_mask: Tensor | None,
                    cache: RecurrentCache | None = None) -> tuple[Tensor, RecurrentCache]:
        """Incremental decoding: tokens (B, t), the whole prefix from BOS when cache is None, else only the new
        tokens -> (logits (B, t, V), the cache after them)."""
        keep = self._keep(src_mask, memory)  # (B, S)
        if cache is None:
            cache = self.decoder.start(memory, keep)
        output, cache, _ = self.decoder(tokens, memory, keep, cache)  # (B, t, H)
        return self.output_proj(output), cache  # (B, t, V)

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        """Teacher forcing: src (B, S), tgt (B, T) shifted right (starts with BOS) -> logits (B, T, V)."""
        return self.output_proj(self.decoder_states(src, tgt))  # (B, T, V)

    def decoder_states(self, src: Tensor, tgt: Tensor) -> Tensor:
        """Teacher forcing up to the decoder's output o_i, before the projection to the vocabulary: (B, T, H)."""
        return self._teacher_forced(src, tgt)[0]

    def alignments(self, src: Tensor, tgt: Tensor) -> Tensor:
        """The attention weights alpha_ij of a teacher-forced pass (B, T, S): Bahdanau et al.'s Figure 3."""
        if self.decoder.attention is None:
            raise ValueError(f"model.type={self.kind!r} with rnn_attention='none' has no alignments: its decoder "
                             "reads one fixed summary of the source; train with rnn_attention='additive'")
        return self._teacher_forced(src, tgt)[1]

    def _teacher_forced(self, src: Tensor, tgt: Tensor) -> tuple[Tensor, Tensor | None]:
        keep = src != self.pad_id  # (B, S)
        memory = self.encoder(src, keep)  # (B, S, D')
        output, _, weights = self.decoder(tgt, memory, keep, self.decoder.start(memory, keep))  # (B, T, H)
        return output, weights

    @property
    def max_positions(self) -> int | None:
        """No position table bounds a recurrent decoder's output (decoding/protocol.py::length_limits)."""
        return None

    def num_parameters(self) -> int:
        """Parameters counted once, even when embeddings and output projection share a tensor."""
        return sum(p.numel() for p in self.parameters())


def _init_linears(*modules: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for the linear layers (bridge, attention, W_c); the RNNs keep
    torch's U(-1/sqrt(H), 1/sqrt(H))."""
    for module in (m for root in modules for m in root.modules()):
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def build_recurrent(config: ModelConfig) -> RecurrentEncoderDecoder:
    """The recurrent encoder-decoder of `config` (type rnn, lstm or gru; module docstring)."""
    from transformer.models.build import output_projection  # the Transformer's: tying, output bias, pad logit

    c = config
    tgt_tokens = TokenEmbedding(c.tgt_vocab_size, c.d_model, c.pad_id, c.scale_embedding)
    src_tokens = tgt_tokens if c.share_embeddings else TokenEmbedding(
        c.src_vocab_size, c.d_model, c.pad_id, c.scale_embedding)
    encoder = RecurrentEncoder(c.type, src_tokens, c.d_model, c.n_encoder_layers, c.rnn_bidirectional, c.dropout)
    decoder = RecurrentDecoder(c.type, tgt_tokens, c.d_model, encoder.output_size, c.n_decoder_layers,
                               c.rnn_attention == "additive", c.rnn_bidirectional, c.dropout)
    _init_linears(decoder.bridge, decoder.combine, *([] if decoder.attention is None else [decoder.attention]))
    return RecurrentEncoderDecoder(c.type, encoder, decoder, output_projection(c, tgt_tokens), pad_id=c.pad_id)
