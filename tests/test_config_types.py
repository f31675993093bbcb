"""Typed config values: each checked against its dataclass field's type, with one-line errors (issue #16, item 2).
YAML is parsed by PyYAML, whose YAML 1.1 reads `1e-3` as a string and `no` as false."""

import dataclasses
import typing

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer.cli import main
from transformer.config import DataConfig, DecodeConfig, ModelConfig, RunConfig, TrainConfig
from transformer.config_tree import typed

BASE = "model: {preset: tiny}\ntrain: {max_steps: 3}\n"


def _load(tmp_path, text: str = BASE, overrides: list[str] | None = None) -> RunConfig:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return RunConfig.load(str(path), overrides)


def test_pyyaml_reads_1e_minus_3_as_a_string_and_the_config_as_the_number_it_spells(tmp_path):
    assert yaml.safe_load("lr: 1e-3") == {"lr": "1e-3"}  # the trap itself, in the library we did not write
    config = _load(tmp_path, "model: {preset: tiny}\ntrain: {max_steps: 1e3, lr: 1e-3, max_minutes: 2}\n")
    assert config.train.lr == 0.001 and isinstance(config.train.lr, float)
    assert config.train.max_steps == 1000 and isinstance(config.train.max_steps, int)
    assert config.train.max_minutes == 2


@pytest.mark.parametrize(("override", "message"), [
    ("train.lr=abc", "train.lr='abc' must be a number, e.g. 0.001"),
    ("train.max_steps=ten", "train.max_steps='ten' must be a whole number, e.g. 1000"),
    ("train.max_steps=2.5", "train.max_steps=2.5 must be a whole number"),
    ("train=3", "config section train must be a mapping of keys to values, got 3"),
    ("model=[1]", "config section model must be a mapping of keys to values"),
    ("train.bf16=maybe", "train.bf16='maybe' must be true or false"),
    ("train.betas=[0.9]", r"train.betas=\[0.9\] must be a list of 2 values"),
    ("data.translations=k", "data.translations='k' must be a list"),
    ("data.src=no", "data.src=False: YAML read a word such as no/off/yes as true/false; quote it"),
    ("train.lr=[1", r"override 'train.lr=\[1': the value is not valid YAML \(line 1, column 3"),
    ("train.learning_rate=0.1", r"unknown config key train.learning_rate; did you mean train.lr\?"),
    ("decode.beam_size=2", r"did you mean decode.beam\?"),
    ("train.warmpu=2", r"did you mean train.warmup\?"),
])
def test_a_bad_value_or_key_is_a_one_line_error(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        _load(tmp_path, overrides=[override])


@pytest.mark.parametrize(("text", "where"), [
    ("model: {preset: tiny\ntrain: {max_steps: 3}\n", "line 2, column 6"),
    ("train:\n  max_steps: 3\n lr: 2\n", "line 3, column 2"),
])
def test_malformed_yaml_names_its_line_and_column(tmp_path, text, where):
    with pytest.raises(ValueError, match=f"is not valid YAML: {where}: "):
        _load(tmp_path, text)


@pytest.mark.parametrize("override", ["train.lr=abc", "train.max_steps=ten", "train=3", "train.learning_rate=1"])
def test_the_command_line_exits_2_with_one_line_and_no_traceback(tmp_path, capsys, override):
    (tmp_path / "config.yaml").write_text(BASE)
    assert main(["train", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "run"), "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing written


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "decode": DecodeConfig}


@settings(max_examples=300, deadline=None)
@given(section=st.sampled_from(sorted(SECTIONS)), data=st.data(),
       value=st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                       st.text(max_size=12), st.lists(st.integers(-3, 3), max_size=3)))
def test_any_value_for_any_key_is_accepted_or_a_value_error(section, data, value):
    """Fuzzing: whatever YAML could give a key, the config either takes it or raises ValueError, never
    TypeError or AttributeError (which would reach the user as a traceback)."""
    cls = SECTIONS[section]
    key = data.draw(st.sampled_from([f.name for f in dataclasses.fields(cls)]))
    tree = {"model": {"preset": "tiny"}, "train": {"max_steps": 3}}
    tree[section] = {**tree.get(section, {}), key: value}
    try:
        config = RunConfig.from_dict(tree)
    except ValueError:
        return
    kept = getattr(getattr(config, section), key)
    hint = typing.get_type_hints(cls)[key]
    assert typed(kept, hint, key) == kept  # what was taken has its field's type
