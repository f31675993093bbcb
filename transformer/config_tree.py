"""Config trees: YAML files, `--set a.b=c` overrides, and dataclasses built from dicts with errors that name the
offending key and suggest the closest valid one. The typed config itself is transformer/config.py."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, TypeVar

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
    """Build dataclass `cls` from a dict; an unknown key is an error that suggests the closest name."""
    check_known(values, [f.name for f in dataclasses.fields(cls)], f"config key {where}.")  # type: ignore[arg-type]
    return cls(**values)


def check_known(values: dict[str, Any], names: list[str], what: str) -> None:
    """Raise for the first key not in `names`, suggesting the closest one (or listing them all)."""
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            prefix = what.rpartition(" ")[2]
            hint = f"; did you mean {prefix}{close[0]}?" if close else f"; valid: {', '.join(names)}"
            raise ValueError(f"unknown {what}{key}{hint}")


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
        node[leaf] = yaml.safe_load(raw)
    return tree


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
    if not isinstance(tree, dict):
        raise ValueError(f"config file {path!r} must hold a mapping of sections, got {type(tree).__name__}")
    return tree
