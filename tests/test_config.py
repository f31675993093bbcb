import pytest

from transformer.config import DataConfig, ModelConfig, TrainConfig, apply_overrides, model_config_from_dict


def test_presets_are_table_3_and_validate():
    base, big = ModelConfig.preset("base"), ModelConfig.preset("big")
    assert (base.d_model, base.n_heads, base.d_ff, base.n_encoder_layers, base.dropout) == (512, 8, 2048, 6, 0.1)
    assert (big.d_model, big.n_heads, big.d_ff, big.dropout) == (1024, 16, 4096, 0.3)
    assert base.d_head == 64


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(d_model=100, n_heads=8), r"d_model=100 is not divisible by n_heads=8"),
        (dict(dropout=1.0), r"model.dropout=1.0 must be in \[0, 1\)"),
        (dict(eos_id=0), r"special ids must differ, got \{'pad_id': 0, 'bos_id': 1, 'eos_id': 0\}"),
        (dict(src_vocab_size=100), r"src_vocab_size=100 != tgt_vocab_size=8000"),
        (dict(positional="rotary"), r"positional='rotary'"),
    ],
)
def test_bad_model_config_names_the_values(changes, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.preset("small", **changes)


def test_unknown_key_suggests_the_closest_and_unknown_preset_lists_them():
    with pytest.raises(ValueError, match=r"unknown config key model.d_modle; did you mean model.d_model\?"):
        model_config_from_dict({"preset": "tiny", "d_modle": 3})
    expected = r"unknown model preset 'huge'; choose one of \['base', 'big', 'small', 'tiny'\]"
    with pytest.raises(ValueError, match=expected):
        ModelConfig.preset("huge")


def test_overrides_parse_yaml_values_into_nested_sections():
    tree = apply_overrides({"model": {"preset": "tiny"}}, ["model.dropout=0.3", "train.max_steps=10", "x.y=[1, 2]"])
    assert tree == {"model": {"preset": "tiny", "dropout": 0.3}, "train": {"max_steps": 10}, "x": {"y": [1, 2]}}
    assert model_config_from_dict(tree["model"]).dropout == 0.3
    with pytest.raises(ValueError, match=r"override 'model.dropout' is not of the form section.key=value"):
        apply_overrides({}, ["model.dropout"])


def test_cooldown_outside_zero_one_names_the_value():
    with pytest.raises(ValueError, match=r"train.cooldown=1.5 must be in \[0, 1\]"):
        TrainConfig(max_steps=10, cooldown=1.5)


def test_split_han_must_be_a_yes_or_no():
    assert DataConfig(split_han=True).split_han is True
    with pytest.raises(ValueError, match=r"data.split_han='yes please': use true or false"):
        DataConfig(split_han="yes please")


def test_bos_may_equal_pad_or_eos_and_position_offset_needs_learned_positions():
    assert ModelConfig.preset("tiny", pad_id=5, bos_id=5, eos_id=0).bos_id == 5  # Marian starts with <pad>
    assert ModelConfig.preset("tiny", pad_id=1, bos_id=2, eos_id=2).bos_id == 2  # BART starts with </s>
    with pytest.raises(ValueError, match=r"position_offset=2 needs positional='learned'"):
        ModelConfig.preset("tiny", position_offset=2)
    with pytest.raises(ValueError, match=r"activation='tanh': use 'relu', 'gelu', 'swish', 'gelu_new' or 'leaky_relu'"):
        ModelConfig.preset("tiny", activation="tanh")


@pytest.mark.parametrize("key", ["max_steps", "max_minutes", "max_epochs"])
@pytest.mark.parametrize("value", [0, -1])
def test_a_budget_of_zero_or_less_names_the_value_and_the_fix(key, value):
    with pytest.raises(ValueError, match=rf"train.{key}={value} must be > 0 .*leave it unset"):
        TrainConfig(**{key: value})


def test_special_id_outside_the_smaller_vocabulary_names_that_vocabulary():
    with pytest.raises(ValueError, match=r"model.eos_id=7 is outside the vocabulary src_vocab_size=5"):
        ModelConfig.preset("tiny", src_vocab_size=5, tgt_vocab_size=10, share_embeddings=False, eos_id=7)
    with pytest.raises(ValueError, match=r"model.eos_id=7 is outside the vocabulary tgt_vocab_size=6"):
        ModelConfig.preset("tiny", src_vocab_size=10, tgt_vocab_size=6, share_embeddings=False, eos_id=7)


def test_the_activation_names_a_config_accepts_are_the_ones_the_layers_implement():
    from transformer.config import ACTIVATION_NAMES
    from transformer.nn.layers import ACTIVATIONS

    assert set(ACTIVATION_NAMES) == set(ACTIVATIONS)
