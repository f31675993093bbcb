"""ModelConfig: the hyperparameters of a Transformer of the family, named as in the paper, with the options the
imported descendants need (Marian, BART, GPT-2, BERT, ViT, T5), each defaulting to the paper's choice.
transformer/config.py re-exports it with the other sections of a run's config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from transformer.config_tree import check, from_dict, one_of
from transformer.special_ids import check_special_ids

# The feed-forward activations a model may name (transformer/nn/layers.py::ACTIVATIONS implements them; a test
# keeps the two equal). "swish" is x * sigmoid(x), used by the OPUS-MT Marian models; "gelu_new" is GELU's tanh
# approximation (GPT-2); "leaky_relu" is max(x, 0.01 x) (the activations experiment of issue #14).
ACTIVATION_NAMES = ("relu", "gelu", "swish", "gelu_new", "leaky_relu")


# model.type: the encoder-decoder of the paper, and its descendants built from the same blocks (models/build.py);
# then what came before it (issue #14): recurrent encoder-decoders, translating as the paper's model does, and
# bag-of-words and n-gram text classifiers.
TRANSFORMER_TYPES = ("encoder_decoder", "decoder_only", "encoder_only", "vision")
RECURRENT_TYPES = ("rnn", "lstm", "gru")  # torch.nn.RNN (tanh) / LSTM / GRU encoder-decoders (models/recurrent.py)
BAG_TYPES = ("bag_of_words", "ngram")  # text classifiers over unordered tokens / n-grams (models/bag_of_words.py)
MODEL_TYPES = TRANSFORMER_TYPES + RECURRENT_TYPES + BAG_TYPES
# model.rnn_attention: how a recurrent decoder reads the encoder: "none" (the final encoder state alone, one fixed
# context vector: Sutskever et al. 2014, Cho et al. 2014) or "additive" (Bahdanau et al. 2015's attention over
# every encoder state).
RNN_ATTENTIONS = ("none", "additive")
# The filters an image file may be resized with (PIL's names; "none" keeps its size, which must be the model's).
IMAGE_RESAMPLES = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos", "none")
# model.embed_pooling: how `embed` makes one vector of an encoder-only model's token states (non-pad positions):
# their mean, the first ([CLS]) position's state, or the maximum of each dimension (sentence-transformers' modes).
EMBED_POOLINGS = ("mean", "cls", "max")


def refuse_baseline(model_type: str, what: str, fix: str) -> None:
    """A one-line ValueError when `model_type` is one of the baselines from before the Transformer, for a command
    or function (`what`) built on the Transformer's layers; `fix` says what to do instead."""
    if model_type in RECURRENT_TYPES:
        kind = "a recurrent encoder-decoder (models/recurrent.py)"
    elif model_type in BAG_TYPES:
        kind = f"a bag of {'words' if model_type == 'bag_of_words' else 'n-grams'} (models/bag_of_words.py)"
    else:
        return
    raise ValueError(f"{what} is built for the Transformer's layers, and model.type={model_type!r} is {kind}; {fix}")


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of a Transformer, named as in the paper.

    `type` is the architecture: "encoder_decoder" (the paper's, Figure 1), "decoder_only" (GPT: one stack of
    encoder layers under a causal mask), "encoder_only" (BERT: the encoder with an MLM head) or "vision" (ViT:
    the encoder over image patches). A single-stack
    model has `n_layers` layers (a preset gives it its encoder's depth) and one vocabulary, `tgt_vocab_size`;
    the encoder/decoder depths and `src_vocab_size` are the encoder-decoder's; `image_size`, `patch_size`,
    `channels` and `n_classes` the vision model's.
    """

    type: str = "encoder_decoder"  # one of MODEL_TYPES
    src_vocab_size: int = 8000
    tgt_vocab_size: int = 8000
    d_model: int = 512
    n_heads: int = 8
    d_ff: int = 2048
    n_encoder_layers: int = 6
    n_decoder_layers: int = 6
    n_layers: int | None = None  # the one stack of a single-stack model (decoder_only, encoder_only, vision)
    dropout: float = 0.1  # P_drop on sublayer outputs and on embeddings + positions (section 5.4)
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    activation: str = "relu"  # one of ACTIVATION_NAMES
    norm_first: bool = False  # False: post-LN as in the paper; True: pre-LN
    positional: str = "sinusoidal"  # or "learned", or "relative" (T5: a bucketed bias on the attention scores)
    sinusoidal_interleaved: bool = True  # sin on even, cos on odd dims (paper); False: sines then cosines (Marian)
    max_positions: int = 1024  # size of a learned table; sinusoidal encodings have no limit
    position_offset: int = 0  # learned table rows kept before position 0 (BART stores positions from row 2)
    layernorm_embedding: bool = False  # a LayerNorm on embeddings + positions, before dropout (BART)
    share_embeddings: bool = True  # one embedding for source and target (needs a joint vocabulary)
    tie_output: bool = True  # output projection shares the target embedding matrix (section 3.4)
    output_bias: bool = False  # a bias on the output logits (Hugging Face's final_logits_bias)
    # a fixed, untrained logit for pad_id: an imported GPT-2's added <pad> gets -1e4 (interop/hf_gpt2.py)
    pad_logit: float | None = None
    scale_embedding: bool = True  # multiply embeddings by sqrt(d_model)
    layer_norm_eps: float = 1e-5
    # T5's options (interop/hf_t5.py); the defaults are the paper's.
    norm: str = "layernorm"  # or "rms": RMSNorm, without mean or bias
    linear_bias: bool = True  # biases on the attention and feed-forward linears (T5 has none)
    gated_ffn: bool = False  # FFN(x) = (act(x W1) * x V) W2 (T5 v1.1's gated-gelu)
    attention_scale: float | None = None  # multiplies Q K^T; None: the paper's 1/sqrt(d_head) (T5: 1.0)
    relative_buckets: int = 32  # positional="relative": buckets of the relative position bias
    relative_max_distance: int = 128  # positional="relative": distances from here on share the last bucket
    output_scale: float = 1.0  # multiplies the decoder output before the projection (T5, tied: d_model**-0.5)
    pad_id: int = 0
    bos_id: int = 1  # the token decoding starts with: Marian starts with pad_id, BART with eos_id
    eos_id: int = 2
    image_size: int = 0  # vision: the side of the (square) input image, in pixels
    patch_size: int = 0  # vision: the side of a patch; it divides image_size
    channels: int = 1  # vision: colour channels of the image
    # vision: how `predict` reads an image file. () = ours (grey, light backgrounds inverted); else Hugging Face's
    # ViTImageProcessor: RGB, resized with image_resample, pixels / 255, minus image_mean, over image_std
    image_mean: tuple[float, ...] = ()
    image_std: tuple[float, ...] = ()
    image_resample: str = "lanczos"  # a PIL filter (IMAGE_RESAMPLES), or "none": the file must have the size
    n_classes: int = 0  # vision, encoder_only: the classes of the head (encoder_only: 0 = none)
    labels: tuple[str, ...] = ()  # the classes' names, n_classes of them (task classify: its data's labels)
    type_vocab_size: int = 0  # encoder_only: token types (BERT's segments A and B: 2); 0 = none
    pooling: str = "cls"  # encoder_only: what the classification head reads: "cls" (first position) or "mean"
    embed_pooling: str = "mean"  # encoder_only, `embed`: one of EMBED_POOLINGS over the token states ([CLS] included)
    embed_normalize: bool = False  # encoder_only, `embed`: always L2-normalize (a sentence-transformers Normalize)
    # Recurrent encoder-decoders (type rnn, lstm, gru): d_model is the embedding and hidden size, the layers are
    # n_encoder_layers and n_decoder_layers, `dropout` applies between layers and on embeddings.
    rnn_attention: str = "additive"  # one of RNN_ATTENTIONS
    rnn_bidirectional: bool = True  # the encoder reads the source both ways (Bahdanau et al. 2015)
    # The n-gram classifier (type ngram): token n-grams for n = 1..ngram_order, hashed into ngram_buckets rows.
    ngram_order: int = 2
    ngram_buckets: int = 65536

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(str(label) for label in self.labels))
        check(not self.labels or len(self.labels) == self.n_classes,
              f"model.labels names {len(self.labels)} classes but model.n_classes={self.n_classes}; "
              "give one name per class, or no names")
        check(self.pooling in ("cls", "mean"), f"model.pooling={self.pooling!r}: use 'cls' or 'mean'")
        check(self.embed_pooling in EMBED_POOLINGS,
              f"model.embed_pooling={self.embed_pooling!r}: use {one_of(EMBED_POOLINGS)}")
        check(self.type in MODEL_TYPES, f"model.type={self.type!r}: use {one_of(MODEL_TYPES)}")
        for name in ("src_vocab_size", "tgt_vocab_size", "d_model", "n_heads", "d_ff", "max_positions"):
            check(getattr(self, name) > 0, f"model.{name}={getattr(self, name)} must be positive")
        if self.type in RECURRENT_TYPES:
            self._check_recurrent()
        elif self.type in BAG_TYPES:
            check(self.ngram_order >= 1 and self.ngram_buckets >= 1,
                  f"model.ngram_order={self.ngram_order} and model.ngram_buckets={self.ngram_buckets} must be >= 1")
        elif self.type == "encoder_decoder":
            check(self.n_encoder_layers >= 0 and self.n_decoder_layers > 0,
                   f"need n_encoder_layers >= 0 and n_decoder_layers > 0, got "
                   f"{self.n_encoder_layers} and {self.n_decoder_layers}")
        else:
            check(isinstance(self.n_layers, int) and self.n_layers > 0,
                   f"model.type={self.type!r} needs model.n_layers > 0 (the depth of its one stack), "
                   f"got {self.n_layers!r}")
        if self.type == "vision":
            self._check_vision()
        check(self.type not in TRANSFORMER_TYPES or self.d_model % self.n_heads == 0,
               f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
               f"choose n_heads that divides d_model (d_head = d_model // n_heads)")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            check(0.0 <= getattr(self, name) < 1.0, f"model.{name}={getattr(self, name)} must be in [0, 1)")
        check(self.pad_logit is None or not self.output_bias,
              f"model.pad_logit={self.pad_logit} needs output_bias=false (the fixed logit is the output's bias)")
        check(self.activation in ACTIVATION_NAMES,
               f"model.activation={self.activation!r}: use {one_of(ACTIVATION_NAMES)}")
        check(self.norm in ("layernorm", "rms"), f"model.norm={self.norm!r}: use 'layernorm' or 'rms'")
        self._check_positions()
        check(self.single_stack or not self.share_embeddings or self.src_vocab_size == self.tgt_vocab_size,
               f"share_embeddings needs one joint vocabulary, but src_vocab_size={self.src_vocab_size} "
               f"!= tgt_vocab_size={self.tgt_vocab_size}; set share_embeddings=false or use a joint tokenizer")
        smaller = ("src_vocab_size" if self.src_vocab_size <= self.tgt_vocab_size and not self.single_stack
                   else "tgt_vocab_size")
        check_special_ids(self.pad_id, self.bos_id, self.eos_id, getattr(self, smaller), prefix="model.",
                          vocabulary=f"the vocabulary {smaller}={getattr(self, smaller)}",
                          fix="special ids must be valid in both vocabularies")

    def _check_recurrent(self) -> None:
        check(self.n_encoder_layers > 0 and self.n_decoder_layers > 0,
              f"model.type={self.type!r} needs n_encoder_layers > 0 and n_decoder_layers > 0, got "
              f"{self.n_encoder_layers} and {self.n_decoder_layers}")
        check(self.rnn_attention in RNN_ATTENTIONS,
              f"model.rnn_attention={self.rnn_attention!r}: use {one_of(RNN_ATTENTIONS)}")

    def _check_vision(self) -> None:
        check(self.image_size > 0 and self.patch_size > 0 and self.image_size % self.patch_size == 0,
               f"model.image_size={self.image_size} and model.patch_size={self.patch_size} must be positive, "
               "the patch size dividing the image size")
        check(self.channels > 0 and self.n_classes >= 2,
               f"model.channels={self.channels} must be positive and model.n_classes={self.n_classes} >= 2")
        check(len(self.image_mean) == len(self.image_std) in (0, self.channels)
              and min(self.image_std, default=1) > 0,
              f"model.image_mean={list(self.image_mean)} and image_std={list(self.image_std)} need one value per "
              f"channel ({self.channels}), std > 0, or both empty")
        check(self.image_resample in IMAGE_RESAMPLES,
              f"model.image_resample={self.image_resample!r}: use {one_of(IMAGE_RESAMPLES)}")

    def _check_positions(self) -> None:
        check(self.positional in ("sinusoidal", "learned", "relative"),
               f"model.positional={self.positional!r}: use 'sinusoidal', 'learned' or 'relative'")
        check(self.relative_buckets >= 2 and self.relative_max_distance >= 2,
               f"model.relative_buckets={self.relative_buckets} and relative_max_distance="
               f"{self.relative_max_distance} must both be >= 2")
        check(self.positional != "relative" or self.type == "encoder_decoder",
               f"model.positional='relative' is built for type encoder_decoder only, got type={self.type!r}")
        check(self.position_offset >= 0 and (self.position_offset == 0 or self.positional == "learned"),
               f"model.position_offset={self.position_offset} needs positional='learned' and must be >= 0 "
               f"(got positional={self.positional!r})")
        check(self.positional != "sinusoidal" or self.d_model % 2 == 0,
               f"sinusoidal positions need an even d_model, got {self.d_model}")

    @property
    def single_stack(self) -> bool:
        """Whether the model reads one sequence (a single stack, or a bag of its tokens), rather than translating
        a source into a target as the paper's encoder-decoder and the recurrent ones do."""
        return not self.seq2seq

    @property
    def seq2seq(self) -> bool:
        """Whether the model is an encoder-decoder: the paper's, or a recurrent one."""
        return self.type == "encoder_decoder" or self.type in RECURRENT_TYPES

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **changes: Any) -> ModelConfig:
        """`base` and `big` are Table 3 of the paper; `small` and `tiny` fit a CPU."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        values = {**PRESETS[name], **changes}
        if values.get("type", "encoder_decoder") != "encoder_decoder":
            values.setdefault("n_layers", PRESETS[name]["n_encoder_layers"])  # a single stack: the encoder's depth
        return from_dict(cls, values, "model")


PRESETS: dict[str, dict[str, Any]] = {
    "base": dict(d_model=512, n_heads=8, d_ff=2048, n_encoder_layers=6, n_decoder_layers=6, dropout=0.1),
    "big": dict(d_model=1024, n_heads=16, d_ff=4096, n_encoder_layers=6, n_decoder_layers=6, dropout=0.3),
    "small": dict(d_model=256, n_heads=4, d_ff=1024, n_encoder_layers=3, n_decoder_layers=3, dropout=0.1),
    "tiny": dict(d_model=64, n_heads=4, d_ff=256, n_encoder_layers=2, n_decoder_layers=2, dropout=0.0),
}


def model_config_from_dict(values: dict[str, Any]) -> ModelConfig:
    """`{preset: small, d_model: 128, ...}` -> ModelConfig (the preset first, then the explicit keys)."""
    values = dict(values)
    preset = values.pop("preset", None)
    if preset is None:
        return from_dict(ModelConfig, values, "model")
    return ModelConfig.preset(preset, **values)
