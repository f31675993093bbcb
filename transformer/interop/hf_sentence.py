"""What a sentence-transformers directory (modules.json: Transformer, Pooling, optionally Normalize) does after
its transformer, as our settings: model.embed_pooling (mean, cls or max), model.embed_normalize and the
longest input (sentence_bert_config.json's max_seq_length). `transformer embed` then computes the vectors
SentenceTransformer.encode does.

Refused, with the reason: pooling modes other than one of mean, cls and max (weightedmean, lasttoken,
mean_sqrt_len_tokens, several at once), include_prompt=false, and modules other than these three (Dense, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transformer.config import EMBED_POOLINGS
from transformer.interop.hf_bert_tokenizer import read_json

_LEGACY_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                 "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                 "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
_MODULES = ("Transformer", "Pooling", "Normalize")


@dataclass(frozen=True)
class SentenceSettings:
    pooling: str  # one of config.EMBED_POOLINGS
    normalize: bool
    max_seq_length: int | None  # tokens, [CLS] and [SEP] included; None: the model's max_positions


def _pooling_mode(config: dict) -> str:
    modes = config.get("pooling_mode")
    if modes is None:  # sentence-transformers < 6: one boolean per mode
        modes = [mode for key, mode in _LEGACY_MODES.items() if config.get(key)]
    modes = [modes] if isinstance(modes, str) else list(modes)
    if len(modes) != 1 or modes[0] not in EMBED_POOLINGS:
        raise ValueError(f"sentence-transformers pooling {modes}: only one of {list(EMBED_POOLINGS)} is supported")
    if config.get("include_prompt", True) is not True:
        raise ValueError("sentence-transformers pooling with include_prompt=false is not supported; "
                         "only pooling over all tokens is")
    return modes[0]


def sentence_settings(hf_dir: Path) -> SentenceSettings | None:
    """The pooling, normalization and max_seq_length of a sentence-transformers directory; None for a plain
    save_pretrained directory (no modules.json)."""
    modules = read_json(hf_dir / "modules.json")
    if not modules:
        return None
    kinds = {str(module.get("type", "")).rsplit(".", 1)[-1]: module.get("path", "") for module in modules}
    unknown = sorted(set(kinds) - set(_MODULES))
    if unknown or "Pooling" not in kinds or kinds.get("Transformer", None) != "":
        raise ValueError(f"{hf_dir / 'modules.json'} lists modules {sorted(kinds)}: only a Transformer saved at the "
                         f"top of the directory, a Pooling and an optional Normalize are supported (not {unknown})")
    pooling = _pooling_mode(read_json(hf_dir / kinds["Pooling"] / "config.json"))
    settings = read_json(hf_dir / "sentence_bert_config.json")
    if settings.get("do_lower_case"):
        raise ValueError("sentence_bert_config.json do_lower_case=true (lowercasing before the tokenizer) is not "
                         "reproduced; only models whose tokenizer does its own casing import")
    length = settings.get("max_seq_length")
    return SentenceSettings(pooling, "Normalize" in kinds, int(length) if length else None)
