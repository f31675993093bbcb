"""Config trees: YAML files, `--set a.b=c` overrides, and dataclasses built from dicts, each value checked
against its field's type, with one-line errors that name the offending key and value and suggest the closest
valid key. The typed config itself is transformer/config.py.

YAML 1.1, which PyYAML reads, takes `1e-3` for a string (a float needs a dot: `1.0e-3`), and `no` or `off`
for false. A number field reads such a string as the number it spells; a text field refuses a true/false
(quote it: `src: "no"`) and reads a number as its text (the Bible code `2`).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, TypeVar, Union

import yaml

T = TypeVar("T")


def one_of(names: tuple[str, ...]) -> str:
    """'a', 'b' or 'c'."""
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def from_dict(cls: type[T], values: dict[str, Any], where: str) -> T:
    """Build dataclass `cls` from a dict, each value checked against its field's type (`typed`); an unknown key
    is an error that suggests the closest name."""
    check_section(values, where)
    check_known(values, [f.name for f in dataclasses.fields(cls)], f"config key {where}.")  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    return cls(**{key: typed(value, hints[key], f"{where}.{key}") for key, value in values.items()})


def check_section(values: Any, where: str) -> None:
    check(isinstance(values, dict), f"config section {where} must be a mapping of keys to values, got "
          f"{values!r}; set one key at a time, e.g. --set {where}.KEY=VALUE")


def typed(value: Any, hint: Any, name: str) -> Any:
    """`value` as type `hint` (int, float, bool, str, X | None, tuple[X, ...], tuple[X, Y]), or ValueError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if value is None and len(inner) < len(args):
            return None
        return typed(value, inner[0], name)
    if origin is tuple:
        check(isinstance(value, (list, tuple)), f"{name}={value!r} must be a list, e.g. [{_example(args[0])}]")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(typed(v, args[0], f"{name}[{i}]") for i, v in enumerate(value))
        check(len(value) == len(args), f"{name}={value!r} must be a list of {len(args)} values")
        return tuple(typed(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if hint is bool:
        check(isinstance(value, bool), f"{name}={value!r} must be true or false")
        return value
    if hint in (int, float):
        return _number(value, hint, name)
    if hint is str:
        check(not isinstance(value, bool), f"{name}={value!r}: YAML read a word such as no/off/yes as "
              f"true/false; quote it, e.g. {name.rpartition('.')[2]}: \"no\"")
        check(isinstance(value, (str, int, float)), f"{name}={value!r} must be a text")
        return str(value)
    return value


def _number(value: Any, kind: type, name: str) -> int | float:
    what = "a whole number, e.g. 1000" if kind is int else "a number, e.g. 0.001"
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"{name}={value!r} must be {what}") from None
    check(isinstance(number, (int, float)) and not isinstance(number, bool), f"{name}={value!r} must be {what}")
    if kind is int:
        check(float(number).is_integer(), f"{name}={value!r} must be {what}")
        return int(number)
    return number  # an int is a valid float (PEP 484), kept as written


def _example(hint: Any) -> str:
    return {int: "1, 2", float: "0.5, 1.0", str: "a, b"}.get(hint, "...")


# Names other tools give our keys (Hugging Face, fairseq, PyTorch), suggested before the closest spelling.
KNOWN_ALIASES = {
    "learning_rate": "lr", "warmup_steps": "warmup", "lr_warmup": "warmup", "steps": "max_steps",
    "num_steps": "max_steps", "epochs": "max_epochs", "num_epochs": "max_epochs", "minutes": "max_minutes",
    "grad_clip": "clip_norm", "max_grad_norm": "clip_norm", "clip_grad_norm": "clip_norm",
    "gradient_accumulation_steps": "accumulate", "update_freq": "accumulate", "hidden_size": "d_model",
    "embed_dim": "d_model", "num_heads": "n_heads", "num_attention_heads": "n_heads", "ffn_dim": "d_ff",
    "intermediate_size": "d_ff", "num_layers": "n_layers", "num_hidden_layers": "n_layers",
    "encoder_layers": "n_encoder_layers", "decoder_layers": "n_decoder_layers", "dropout_rate": "dropout",
    "beam_size": "beam", "num_beams": "beam", "length_penalty": "alpha", "vocab": "vocab_size",
}


def check_known(values: dict[str, Any], names: list[str], what: str) -> None:
    """Raise for the first key not in `names`, suggesting the valid one another tool's name means, else the
    closest spelling, and listing the valid keys."""
    for key in values:
        if key not in names:
            alias = KNOWN_ALIASES.get(str(key))
            closest = alias if alias in names else difflib.get_close_matches(str(key), names, n=1, cutoff=0.0)[0]
            prefix = what.rpartition(" ")[2]
            raise ValueError(f"unknown {what}{key}; did you mean {prefix}{closest}? (valid: {', '.join(names)})")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=c` overrides to a nested dict; values are parsed as YAML (so 3, 0.1, true, [1, 2] work)."""
    tree = {k: (dict(v) if isinstance(v, dict) else v) for k, v in tree.items()}
    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep or not path:
            raise ValueError(f"override {item!r} is not of the form section.key=value, e.g. train.max_steps=100")
        *parents, leaf = path.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is a value, not a section")
        try:
            node[leaf] = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise ValueError(f"override {item!r}: the value is not valid YAML ({_yaml_problem(error)}); "
                             "quote it, e.g. key='text'") from None
    return tree


def _yaml_problem(error: yaml.YAMLError) -> str:
    """'line L, column C: what' of a PyYAML error (1-based, as editors count)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def check_override_sections(overrides: list[str], sections: tuple[str, ...], reason: str) -> None:
    """Raise ValueError for the first `section.key=value` override outside `sections`, naming it and them."""
    for item in overrides:
        section = item.partition("=")[0].partition(".")[0]
        if section not in sections:
            settable = " and ".join(f"{name}.*" for name in sections)
            raise ValueError(f"override {item!r}: only {settable} can be set ({reason})")


def load_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            tree = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path!r} not found; presets live in configs/") from None
    except yaml.YAMLError as error:
        raise ValueError(f"config file {path!r} is not valid YAML: {_yaml_problem(error)}") from None
    if not isinstance(tree, dict):
        raise ValueError(f"config file {path!r} must hold a mapping of sections, got {type(tree).__name__}")
    return tree
