import json
import re

import pytest

from transformer.cli import _parser, main


def _subparsers(parser):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", s) for n, s in _subparsers(sub))


def test_every_command_help_lists_all_its_options(capsys):
    commands = dict(_subparsers(_parser()))
    assert {"data list", "data export", "train", "translate", "evaluate"} <= set(commands)
    for name, sub in commands.items():
        with pytest.raises(SystemExit):
            main([*name.split(), "--help"])
        text = capsys.readouterr().out
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in text, f"`transformer {name} --help` does not mention {flag}"


def test_translate_reads_stdin_and_writes_one_line_per_line(model_dir, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("haus baum\n\nwort gott licht\n"))
    assert main(["translate", "--model", str(model_dir), "--beam", "1"]) == 0
    assert len(capsys.readouterr().out.split("\n")) == 4  # three lines, the empty one kept, and a final newline


def test_evaluate_prints_signatures_and_ends_with_one_json_line(model_dir, capsys):
    assert main(["evaluate", "--model", str(model_dir), "--split", "test", "--limit", "5", "--beam", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any(re.match(r"BLEU = ", line) for line in out)
    assert any("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" in line for line in out)
    assert any(line.startswith("chrF2 = ") for line in out)
    record = json.loads(out[-1])
    assert record["n"] == 5 and record["beam"] == 2 and set(record) >= {"bleu", "chrf", "n", "beam"}


def test_user_errors_exit_2_with_the_message(tmp_path, capsys):
    assert main(["translate", "--model", str(tmp_path)]) == 2
    assert "is not a model directory" in capsys.readouterr().err
    assert main(["data", "export", "bible", "--src", "xx", "--tgt", "2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'xx'" in err and "e (German)" in err
    config = tmp_path / "bad.yaml"
    config.write_text("model: {preset: tiny}\ntrain: {max_step: 3}\n")
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "unknown config key train.max_step; did you mean train.max_steps?" in capsys.readouterr().err


def _tiny_marian_dir(root):
    """save_pretrained of a random 1-layer Marian model, with a word-level tokenizer.json of its vocabulary."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    words = ["</s>", "<unk>", *(f"w{i}" for i in range(17)), "<pad>"]  # Marian: </s> 0, <unk> 1, <pad> last
    config = transformers.MarianConfig(
        vocab_size=len(words), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32,
        pad_token_id=len(words) - 1, decoder_start_token_id=len(words) - 1, eos_token_id=0)
    transformers.MarianMTModel(config).save_pretrained(root)
    tokenizer = HFTokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(root / "tokenizer.json"))
    return root


def test_import_hf_set_of_a_key_it_cannot_set_is_a_one_line_error(tmp_path, capsys):
    hf_dir = _tiny_marian_dir(tmp_path / "hf")
    capsys.readouterr()  # save_pretrained's progress bar
    for item in ("model.foo=1", "model.d_model=8", "train.max_steps=3"):
        assert main(["import-hf", str(hf_dir), "--out", str(tmp_path / "out"), "--set", item]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and item.partition("=")[0] in err
        assert "data.*" in err and "decode.*" in err
        assert not (tmp_path / "out").exists()
    assert main(["import-hf", str(hf_dir), "--out", str(tmp_path / "out"), "--set", "decode.beam=2"]) == 0


@pytest.mark.parametrize("budget", ["max_minutes", "max_epochs"])
def test_train_with_a_zero_budget_is_a_one_line_error(tmp_path, capsys, budget):
    config = tmp_path / "config.yaml"
    config.write_text("model: {preset: tiny}\ntrain: {max_steps: 3}\n")
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--set", f"train.{budget}=0"]) == 2
    assert f"train.{budget}=0 must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
