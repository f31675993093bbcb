"""Export an EncoderDecoder to CTranslate2, and translate with the export as our own searches do.

    export_ct2(model, config, tokenizer, out_dir)   an in-memory model -> a CTranslate2 model directory
    export_model_dir(model_dir)                     `transformer export-ct2`: DIR -> DIR/ctranslate2
    Ct2Translator(ct2_dir)                          the export in a ctranslate2.Translator, with its tokenizer
    load_ct2_dir(model_dir)                         (Ct2Translator, RunConfig): `--engine ctranslate2`

An export directory holds CTranslate2's files (model.bin, config.json, shared_vocabulary.json, or
source_vocabulary.json and target_vocabulary.json when the vocabularies differ), the model directory's
tokenizer.json (and target_tokenizer.json), and transformer.json (our special ids, the number of positions
and the quantization; written last: a directory without it holds no complete export).

The weights go through CTranslate2's own Python API: a `converters.Converter` whose `_load` fills a
`specs.TransformerSpec` from our state dict and ModelConfig. How each option maps onto the spec:

    norm_first              pre_norm (pre-LN stacks end with a LayerNorm in both; post-LN stacks have none)
    activation              relu -> RELU, gelu -> GELU (erf, as torch's), swish -> SWISH
    positional              the table itself: a learned table from row position_offset on (max_positions
                            rows), or our sinusoids in either layout for positions 0 .. P - 1, P =
                            max(max_positions, 1024) (CTranslate2's built-in sinusoids are OpenNMT's: other
                            frequencies, counted from position 1)
    scale_embedding         scale_embeddings (sqrt(d_model), or none)
    layernorm_embedding     layernorm_embedding, after the positions are added, as ours
    share_embeddings,       the same tensor in two places; CTranslate2 stores it once and aliases it
      tie_output
    output_bias             the bias of decoder.projection
    layer_norm_eps          config.json's layer_norm_epsilon
    pad_id, bos_id, eos_id  the token strings of these ids: eos_token, decoder_start_token = bos_token
Attention: the self-attention's q, k and v projections are concatenated into one, the cross-attention's k and
v into another; CTranslate2 scales the queries by 1/sqrt(d_head) itself. n_encoder_layers=0 cannot be
expressed (CTranslate2 reads its first encoder layer). Weights may be quantized: int8 rows with one scale each
(int8, int8_float32, ...), or 16-bit floats.

Decoding with an export (`Ct2Translator`) reproduces `greedy_search` (beam 1) and `beam_search` (beam K):
- PAD and BOS (unless BOS is EOS) are suppressed before the softmax (`suppress_sequences`), as ours ban them.
- An example may generate int(max_len_a * source tokens + max_len_b) tokens, EOS included, as ours:
  sources are grouped by that limit, one `translate_batch` call per group with it as max_decoding_length,
  and min_decoding_length=0 (EOS allowed at the first step, as ours; CTranslate2's default is 1).
- Beam search: CTranslate2 takes the 2K best candidates, finishes the EOS ones among the first K and goes on
  with the K best others, as ours; at alpha 0 it stops when the best candidate is EOS, when no live beam
  can beat it any more. Same hypotheses, same best one (ties apart).
- Length penalty: CTranslate2 divides log P by n ** length_penalty, ours by GNMT's ((5 + n) / 6) ** alpha (n
  counts EOS in both). decode.alpha is passed as length_penalty, the nearest analogue: the two searches
  rank finished hypotheses alike only at alpha 0.
- A source with no tokens at all gets an empty translation without a model run (CTranslate2 skips it); our
  torch engine decodes it from a fully masked source.
- Sources and outputs must fit the position table (above), also for sinusoidal models, which have no limit
  in torch.
ctranslate2 is optional: `pip install 'transformer[ct2]'`.
"""

from __future__ import annotations

import importlib
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from transformer.config import DecodeConfig, ModelConfig, RunConfig
from transformer.data.tokenizer import Tokenizer
from transformer.decoding import Hypothesis
from transformer.decoding.protocol import banned_ids, length_limits
from transformer.inference import Translation
from transformer.model_config import refuse_baseline
from transformer.model_dir import read_config
from transformer.models import EncoderDecoder
from transformer.nn.positional import sinusoidal_table

logger = logging.getLogger(__name__)

CT2_DIR = "ctranslate2"  # the export's place inside a model directory
META_FILE = "transformer.json"
SINUSOIDAL_POSITIONS = 1024  # at least this many rows of sinusoids are exported
QUANTIZATIONS = ("float32", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16")
_ACTIVATIONS = {"relu": "RELU", "gelu": "GELU", "swish": "SWISH"}  # ctranslate2.specs.common_spec.Activation
_PIP = "pip install 'transformer[ct2]'  (or: pip install ctranslate2)"


def require_ctranslate2(purpose: str) -> ModuleType:
    """The ctranslate2 module, or a one-line ModuleNotFoundError saying how to install it."""
    try:
        return importlib.import_module("ctranslate2")
    except ImportError:
        raise ModuleNotFoundError(f"{purpose} needs the package 'ctranslate2', which is not installed: run `{_PIP}`",
                                  name="ctranslate2") from None


def check_expressible(config: ModelConfig) -> None:
    """Raise a one-line ValueError naming the first option a CTranslate2 TransformerSpec cannot express."""
    if config.activation not in _ACTIVATIONS:
        raise ValueError(f"model.activation={config.activation!r} has no CTranslate2 equivalent "
                         f"(supported: {sorted(_ACTIVATIONS)})")
    if config.positional not in ("sinusoidal", "learned"):
        raise ValueError(f"model.positional={config.positional!r} has no CTranslate2 equivalent")
    if config.n_encoder_layers == 0:
        raise ValueError("model.n_encoder_layers=0 cannot be exported: a CTranslate2 encoder needs at least one layer")
    t5_options = {"norm": "layernorm", "linear_bias": True, "gated_ffn": False, "attention_scale": None,
                  "output_scale": 1.0}  # T5's (interop/hf_t5.py): not mapped to a TransformerSpec here
    for name, paper in t5_options.items():
        if getattr(config, name) != paper:
            raise ValueError(f"model.{name}={getattr(config, name)!r} has no CTranslate2 export here "
                             f"(supported: {paper!r})")


def vocabulary(hf_tokenizer: Any, size: int) -> list[str]:
    """One distinct token string per id 0 .. size - 1: the tokenizer's own, or `<unused_ID>` where it has none
    (a model vocabulary larger than the tokenizer's) or repeats an earlier one."""
    tokens: list[str] = []
    seen: set[str] = set()
    for i in range(size):
        token = hf_tokenizer.id_to_token(i)
        if token is None or token in seen:
            token = f"<unused_{i}>"
            while token in seen:
                token += "_"
        seen.add(token)
        tokens.append(token)
    return tokens


# ----------------------------------------------------------------------------------------- the spec


def _linear(spec: Any, state: dict[str, Tensor], name: str) -> None:
    spec.weight = state[f"{name}.weight"]  # (out, in), the layout CTranslate2 expects
    if f"{name}.bias" in state:
        spec.bias = state[f"{name}.bias"]


def _fused(spec: Any, state: dict[str, Tensor], names: list[str]) -> None:
    """One projection from several stacked along the output dimension (q, k, v -> one (3D, D) weight)."""
    spec.weight = torch.cat([state[f"{name}.weight"] for name in names])
    if all(f"{name}.bias" in state for name in names):
        spec.bias = torch.cat([state[f"{name}.bias"] for name in names])


def _norm(spec: Any, state: dict[str, Tensor], name: str) -> None:
    spec.gamma, spec.beta = state[f"{name}.weight"], state[f"{name}.bias"]


def _attention(spec: Any, state: dict[str, Tensor], name: str, block: str, cross: bool) -> None:
    """linear[0] = q|k|v (self) or q (cross), linear[1] = k|v (cross), linear[-1] = W^O; the block's LayerNorm."""
    q, k, v = (f"{name}.{p}_proj" for p in ("q", "k", "v"))
    if cross:
        _linear(spec.linear[0], state, q)
        _fused(spec.linear[1], state, [k, v])
    else:
        _fused(spec.linear[0], state, [q, k, v])
    _linear(spec.linear[-1], state, f"{name}.out_proj")
    _norm(spec.layer_norm, state, f"{block}.norm")


def _layer(spec: Any, state: dict[str, Tensor], prefix: str, decoder: bool) -> None:
    _attention(spec.self_attention, state, f"{prefix}.self_attn", f"{prefix}.self_attn_block", cross=False)
    if decoder:
        _attention(spec.attention, state, f"{prefix}.cross_attn", f"{prefix}.cross_attn_block", cross=True)
    _linear(spec.ffn.linear_0, state, f"{prefix}.ff.fc1")
    _linear(spec.ffn.linear_1, state, f"{prefix}.ff.fc2")
    _norm(spec.ffn.layer_norm, state, f"{prefix}.ff_block.norm")


def exported_positions(config: ModelConfig) -> int:
    """How many positions the export can encode: the learned table's, or more sinusoids (they have no limit)."""
    return config.max_positions if config.positional == "learned" else max(config.max_positions, SINUSOIDAL_POSITIONS)


def _position_table(state: dict[str, Tensor], config: ModelConfig, embed: str) -> Tensor:
    """The encodings of positions 0 .. P - 1, P = exported_positions(config): (P, D)."""
    if config.positional == "learned":
        return state[f"{embed}.positions.weight"][config.position_offset :]
    return sinusoidal_table(exported_positions(config), config.d_model, interleaved=config.sinusoidal_interleaved)


def _stack(spec: Any, state: dict[str, Tensor], config: ModelConfig, side: str) -> None:
    """Embedding, positions and layers of the encoder or the decoder (`side`)."""
    embed = "src_embed" if side == "encoder" else "tgt_embed"
    embeddings = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings
    embeddings.weight = state[f"{embed}.tokens.weight"]  # (V, D)
    spec.scale_embeddings = config.scale_embedding
    spec.position_encodings.encodings = _position_table(state, config, embed)
    if config.layernorm_embedding:
        _norm(spec.layernorm_embedding, state, f"{embed}.norm")
    if config.norm_first:
        _norm(spec.layer_norm, state, f"{side}.final_norm")
    for i, layer in enumerate(spec.layer):
        _layer(layer, state, f"{side}.layers.{i}", decoder=side == "decoder")


def transformer_spec(ct2: ModuleType, state: dict[str, Tensor], config: ModelConfig,
                     source: list[str], target: list[str]) -> Any:
    """A filled `ctranslate2.specs.TransformerSpec`: weights, special tokens and both vocabularies."""
    activation = ct2.specs.common_spec.Activation[_ACTIVATIONS[config.activation]]
    spec = ct2.specs.TransformerSpec.from_config(
        (config.n_encoder_layers, config.n_decoder_layers), config.n_heads, pre_norm=config.norm_first,
        activation=activation, layernorm_embedding=config.layernorm_embedding,
    )
    _stack(spec.encoder, state, config, "encoder")
    _stack(spec.decoder, state, config, "decoder")
    _linear(spec.decoder.projection, state, "output_proj")
    settings = spec.config
    settings.eos_token = target[config.eos_id]
    settings.bos_token = settings.decoder_start_token = target[config.bos_id]
    settings.unk_token = "<unk>" if "<unk>" in target else target[config.pad_id]  # an existing token
    settings.layer_norm_epsilon = config.layer_norm_eps
    spec.register_source_vocabulary(source)
    spec.register_target_vocabulary(target)
    return spec


def _converter(ct2: ModuleType, load: Callable[[], Any]) -> Any:
    """A ctranslate2 Converter whose model spec comes from `load` (the class is made here: ctranslate2 is
    optional, so it cannot be a base class at import time)."""

    class EncoderDecoderConverter(ct2.converters.Converter):
        def _load(self) -> Any:
            return load()

    return EncoderDecoderConverter()


# ------------------------------------------------------------------------------------------- export


def _check_quantization(quantization: str) -> None:
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization={quantization!r} is not a CTranslate2 weight type; choose one of "
                         f"{', '.join(QUANTIZATIONS)}")


def export_ct2(model: EncoderDecoder, config: ModelConfig, tokenizer: Tokenizer, out_dir: str | Path,
               quantization: str = "float32") -> Path:
    """Write `model` (built from `config`) as a CTranslate2 model directory `out_dir`, which must not exist,
    with `tokenizer` and the special ids of `config`. The directory appears complete or not at all."""
    ct2 = require_ctranslate2("CTranslate2 export")
    _check_quantization(quantization)
    check_expressible(config)
    out = Path(out_dir)
    if out.exists():
        raise ValueError(f"{out} already exists; choose another --out or remove it first")
    source = vocabulary(tokenizer.hf_tokenizer, config.src_vocab_size)
    target = vocabulary(tokenizer.target_hf_tokenizer, config.tgt_vocab_size)
    state = {name: tensor.detach() for name, tensor in model.state_dict().items()}
    converter = _converter(ct2, lambda: transformer_spec(ct2, state, config, source, target))
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        converter.convert(str(partial), quantization=quantization, force=True)
        tokenizer.save(partial)
        meta = {"pad_id": config.pad_id, "bos_id": config.bos_id, "eos_id": config.eos_id,
                "max_positions": exported_positions(config), "quantization": quantization}
        (partial / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    logger.info("wrote the CTranslate2 model %s (%s)", out, quantization)
    return out


def export_model_dir(model_dir: str | Path, out_dir: str | Path | None = None, *, quantization: str = "float32",
                     weights: str = "model.safetensors") -> Path:
    """Export a model directory (`transformer train` or `import-hf` wrote it) to `out_dir`, by default
    `model_dir/ctranslate2`, where `--engine ctranslate2` looks for it."""
    from transformer.inference import load_model_dir

    refuse_baseline(read_config(model_dir).model.type, "export-ct2 (a CTranslate2 TransformerSpec)", "run it in torch")
    require_ctranslate2("CTranslate2 export")
    _check_quantization(quantization)
    out = Path(model_dir) / CT2_DIR if out_dir is None else Path(out_dir)
    if out.exists():
        raise ValueError(f"{out} already exists; choose another --out or remove it first")
    model, tokenizer, run = load_model_dir(model_dir, weights)
    return export_ct2(model, run.model, tokenizer, out, quantization)


# -------------------------------------------------------------------------------------- translation


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {path.parent} is no complete CTranslate2 export; "
                                "write one with `transformer export-ct2 --model DIR`")
    return json.loads(path.read_text(encoding="utf-8"))


def _read_vocabularies(path: Path) -> tuple[list[str], list[str]]:
    """(source, target) token strings by id, as CTranslate2 saved them (one shared file when they are equal)."""
    if (path / "shared_vocabulary.json").is_file():
        shared = _read_json(path / "shared_vocabulary.json")
        return shared, shared
    return _read_json(path / "source_vocabulary.json"), _read_json(path / "target_vocabulary.json")


def source_limits(sources: Sequence[Sequence[int]], decode: DecodeConfig) -> list[int]:
    """The most tokens, EOS included, each source (ids, no padding) may generate: greedy_search's and
    beam_search's limits."""
    lengths = torch.tensor([len(source) for source in sources])  # (B,)
    mask = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]  # (B, S)
    return length_limits(mask[:, None, None, :], decode.max_len_a, decode.max_len_b, None)


class Ct2Translator:
    """A CTranslate2 export in a `ctranslate2.Translator` (CPU), with the tokenizer and special ids saved beside
    it. `translate_ids` and `translate` decode as `greedy_search` (beam 1) and `beam_search` do (module
    docstring). threads: CTranslate2's intra-op threads (0: its default)."""

    def __init__(self, path: str | Path, threads: int = 0):
        ct2 = require_ctranslate2("--engine ctranslate2")
        self.path = Path(path)
        meta = _read_json(self.path / META_FILE)
        self.pad_id, self.bos_id, self.eos_id = meta["pad_id"], meta["bos_id"], meta["eos_id"]
        self.max_positions: int = meta["max_positions"]
        self.source_tokens, self.target_tokens = _read_vocabularies(self.path)
        self._target_ids = {token: i for i, token in enumerate(self.target_tokens)}
        self.tokenizer = Tokenizer.load(self.path, pad_id=self.pad_id, bos_id=self.bos_id, eos_id=self.eos_id)
        self._suppressed = [[self.target_tokens[i]] for i in banned_ids(self.pad_id, self.bos_id, self.eos_id)]
        self.translator = ct2.Translator(str(self.path), device="cpu", inter_threads=1, intra_threads=threads)

    def _source_tokens(self, ids: Sequence[int]) -> list[str]:
        size = len(self.source_tokens)
        for i in ids:
            if not 0 <= i < size:
                raise ValueError(f"token id {i} is outside the export's source vocabulary 0..{size - 1}")
        return [self.source_tokens[i] for i in ids]

    def _check_fits(self, longest_source: int, limit: int) -> None:
        if max(longest_source, limit) > self.max_positions:
            raise ValueError(f"a source of {longest_source} tokens and an output of up to {limit} need more than the "
                             f"export's {self.max_positions} positions; shorten the input (data.max_len) or lower "
                             "decode.max_len_a/max_len_b")

    def _options(self, decode: DecodeConfig, limit: int, n_best: int) -> dict[str, Any]:
        return dict(beam_size=decode.beam, length_penalty=decode.alpha, max_batch_size=decode.batch_size,
                    max_decoding_length=limit, min_decoding_length=0, max_input_length=0, num_hypotheses=n_best,
                    return_scores=True, suppress_sequences=self._suppressed)

    def _hypothesis(self, tokens: list[str], score: float, limit: int, alpha: float) -> Hypothesis:
        """Ids of the best hypothesis; score = log P / n ** alpha, with n counting the EOS unless the
        hypothesis was cut at the limit."""
        ids = [self._target_ids[token] for token in tokens]
        length = min(len(ids) + 1, limit)
        return Hypothesis(ids, score, score * length**alpha)

    def translate_ids(self, sources: Sequence[Sequence[int]], decode: DecodeConfig) -> list[Hypothesis]:
        """The best hypothesis of each source (ids with the tokenizer's special tokens, no padding), in order:
        tokens without BOS and EOS, CTranslate2's score and the log-probability."""
        return [found[0] for found in self.translate_ids_nbest(sources, decode, 1)]

    def translate_ids_nbest(self, sources: Sequence[Sequence[int]], decode: DecodeConfig,
                            n_best: int) -> list[list[Hypothesis]]:
        """The `n_best` best hypotheses of each source, best first, as `translate_ids` gives the best one
        (n_best <= decode.beam; a source without tokens gets empty hypotheses of score 0)."""
        if not 1 <= n_best <= decode.beam:
            raise ValueError(f"n_best={n_best} must be between 1 and the beam size {decode.beam}; raise the beam "
                             "or lower n_best")
        if not sources:
            return []
        groups: dict[int, list[int]] = {}
        for i, limit in enumerate(source_limits(sources, decode)):
            groups.setdefault(limit, []).append(i)
        results: list[list[Hypothesis]] = [[] for _ in sources]
        for limit, indices in sorted(groups.items()):
            self._check_fits(max(len(sources[i]) for i in indices), limit)
            batch = [self._source_tokens(sources[i]) for i in indices]
            outputs = self.translator.translate_batch(batch, **self._options(decode, limit, n_best))
            for i, output in zip(indices, outputs, strict=True):
                scores = output.scores or [0.0] * len(output.hypotheses)
                results[i] = [self._hypothesis(tokens, score, limit, decode.alpha)
                              for tokens, score in zip(output.hypotheses, scores, strict=True)]
        return results

    def translate(self, lines: Sequence[str], decode: DecodeConfig, max_src_len: int | None = None) -> list[str]:
        """Translate each line, as `transformer.inference.translate` does with the torch model."""
        encoded = self.tokenizer.encode_batch(list(lines), add_special_tokens=True, max_len=max_src_len)
        return [self.tokenizer.decode(h.tokens) for h in self.translate_ids(encoded, decode)]

    def translate_scored(self, lines: Sequence[str], decode: DecodeConfig, max_src_len: int | None = None,
                         n_best: int = 1) -> list[list[Translation]]:
        """As `transformer.inference.translate_scored`: the n_best best translations of each line with their
        scores, best first. Beam search (beam > 1) scores by CTranslate2's ranking, log P / n ** alpha; greedy
        search (beam 1) by the log-probability, the sum of the token log-probabilities, as the torch engine."""
        encoded = self.tokenizer.encode_batch(list(lines), add_special_tokens=True, max_len=max_src_len)
        return [[Translation(self.tokenizer.decode(h.tokens), h.log_prob if decode.beam == 1 else h.score)
                 for h in found] for found in self.translate_ids_nbest(encoded, decode, n_best)]


def load_ct2_dir(model_dir: str | Path, threads: int = 0) -> tuple[Ct2Translator, RunConfig]:
    """The export in `model_dir/ctranslate2` and the model directory's config (decode and data sections)."""
    config = read_config(model_dir)  # a baseline has no export: export_model_dir refuses it
    path = Path(model_dir) / CT2_DIR
    if not (path / META_FILE).is_file():
        raise FileNotFoundError(f"{path} holds no CTranslate2 export; write it first with "
                                f"`transformer export-ct2 --model {model_dir}`")
    return Ct2Translator(path, threads), config
