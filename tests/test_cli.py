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


def test_generate_streams_a_continuation_and_a_seed_repeats_it(lm_dir, capsys):
    args = ["generate", "--model", str(lm_dir), "--prompt", "the king", "--max-new-tokens", "12", "--seed", "7"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert first.startswith("the king") and first.endswith("\n")
    assert main(args) == 0
    assert capsys.readouterr().out == first
    assert main([*args, "--num-samples", "3", "--top-k", "5", "--top-p", "0.9", "--temperature", "0.8"]) == 0
    assert capsys.readouterr().out.count("--- sample ") == 3


@pytest.mark.parametrize(("flags", "message"), [
    (["--temperature", "0"], "temperature=0.0 must be a finite number > 0"),
    (["--top-p", "1.5"], "top_p=1.5 must be in (0, 1]"),
    (["--top-p", "0"], "top_p=0.0 must be in (0, 1]"),
    (["--max-new-tokens", "0"], "max_new_tokens=0 must be an integer >= 1"),
    (["--max-new-tokens", "60"], "exceeds the model's 64 learned positions; shorten the prompt or use max_new_tokens"),
])
def test_generate_with_an_invalid_setting_is_a_one_line_error(lm_dir, capsys, flags, message):
    assert main(["generate", "--model", str(lm_dir), "--prompt", "the king went to the city", *flags]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.count("\n") == 1


def test_evaluate_a_language_model_ends_with_its_perplexity(lm_dir, capsys):
    assert main(["evaluate", "--model", str(lm_dir), "--split", "test"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["split"] == "test" and record["n"] == 16 and 1 < record["perplexity"] < 300


def test_translate_with_a_language_model_is_a_one_line_error(lm_dir, capsys):
    assert main(["translate", "--model", str(lm_dir), "--input", str(lm_dir / "config.yaml")]) == 2
    assert "holds a model for task 'lm', which does not translate" in capsys.readouterr().err


def test_evaluate_an_image_model_ends_with_its_accuracy_as_a_fraction(vit_dir, capsys):
    assert main(["evaluate", "--model", str(vit_dir), "--split", "test"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["split"] == "test" and record["n"] == 355 and 0 <= record["accuracy"] <= 1


def test_predict_classifies_an_image_file_as_the_model_does_its_array(vit_dir, tmp_path, capsys):
    import numpy as np
    import torch
    from PIL import Image

    import transformer
    from transformer.data.images import load_digits_split

    images, _ = load_digits_split("test")
    pixels = (images[0, 0].numpy() * 255).round().astype(np.uint8)
    Image.fromarray(255 - pixels).save(tmp_path / "digit.png")  # drawn dark on light, as a user would
    assert main(["predict", "--model", str(vit_dir), str(tmp_path / "digit.png")]) == 0
    record = json.loads(capsys.readouterr().out)
    expected = transformer.load(vit_dir).classify(torch.tensor(pixels / 255.0, dtype=torch.float32).view(1, 1, 8, 8))
    assert record["class"] == int(expected.argmax()) and record["probability"] == pytest.approx(float(expected.max()),
                                                                                                 abs=1e-4)
    assert main(["predict", "--model", str(vit_dir), str(tmp_path / "missing.png")]) == 2
    assert "no such image file" in capsys.readouterr().err


def test_embed_writes_one_json_vector_a_line_and_evaluate_an_mlm_its_perplexity(bert_dir, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("the king wept.\nhis son sat by the river.\n")
    assert main(["embed", "--model", str(bert_dir), "--input", str(tmp_path / "in.txt"), "--normalize"]) == 0
    vectors = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(vectors) == 2 and len(vectors[0]) == 64
    assert sum(x * x for x in vectors[0]) == pytest.approx(1.0, abs=1e-4)
    assert main(["evaluate", "--model", str(bert_dir), "--split", "test"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["n"] == 16 and 1 < record["perplexity"] < 300
    assert main(["embed", "--model", str(bert_dir.parent.parent), "--input", str(tmp_path / "in.txt")]) == 2


def test_evaluate_a_classifier_ends_with_its_accuracy_and_predict_labels_texts(classifier_dir, labelled_corpus,
                                                                             tmp_path, capsys):
    import transformer

    assert main(["evaluate", "--model", str(classifier_dir), "--split", "test"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    record = json.loads(out[-1])
    assert record["split"] == "test" and record["n"] == 30 and 0 <= record["accuracy"] <= 1
    assert 0 <= record["balanced_accuracy"] <= 1 and out[0].startswith("accuracy ")

    texts = ["the man went to the city.", "his son wept on the mountain."]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    assert main(["predict", "--model", str(classifier_dir), "--input", str(tmp_path / "in.txt")]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    probs = transformer.load(classifier_dir).classify_texts(texts)
    labels = ("motion", "rest", "speech")
    assert [r["label"] for r in records] == [labels[i] for i in probs.argmax(dim=-1).tolist()]
    assert [r["text"] for r in records] == texts
    assert main(["predict", "--model", str(classifier_dir), texts[0]]) == 0
    assert json.loads(capsys.readouterr().out)["label"] == records[0]["label"]
    assert main(["embed", "--model", str(classifier_dir), "--input", str(tmp_path / "in.txt")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_bad_input_and_output_paths_are_one_line_errors_before_any_work(model_dir, tmp_path, capsys):
    (tmp_path / "latin1.txt").write_bytes("haus baum\nwort gr\xfcn\n".encode("latin-1"))
    cases = [
        (["--input", str(tmp_path)], f"{tmp_path} is a directory; give a UTF-8 text file"),
        (["--input", str(tmp_path / "latin1.txt")], f"{tmp_path / 'latin1.txt'}:2: bytes b'\\xfc' are not UTF-8"),
        (["--input", str(tmp_path / "latin1.txt"), "--output", str(tmp_path / "missing" / "out.txt")],
         f"--output {tmp_path / 'missing' / 'out.txt'}: the directory {tmp_path / 'missing'} does not exist"),
    ]
    for flags, message in cases:
        assert main(["translate", "--model", str(model_dir), *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert "iconv -f LATIN1 -t UTF-8" in (main(["translate", "--model", str(model_dir), "--input",
                                                 str(tmp_path / "latin1.txt")]) and capsys.readouterr().err)
    assert main(["evaluate", "--model", str(model_dir), "--output", str(tmp_path / "no" / "h.txt")]) == 2
    assert "does not exist; create it first" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()


def test_missing_training_files_and_unknown_codes_are_refused_before_anything_is_printed_or_made(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(f"model: {{preset: tiny}}\ntrain: {{max_steps: 3}}\ndata: {{corpus: files, train_src: "
                      f"{tmp_path / 'no.de'}, train_tgt: {tmp_path / 'no.en'}}}\n")
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and f"data.train_src='{tmp_path / 'no.de'}': not found" in captured.err
    assert not (tmp_path / "run").exists()
    assert main(["data", "export", "bible", "--src", "e", "--tgt", "xx", "--out", str(tmp_path / "export")]) == 2
    err = capsys.readouterr().err
    assert "unknown Bible code 'xx' for the target side" in err and "tgt_code" not in err
    assert not (tmp_path / "export").exists()


def test_version_is_pyprojects_and_the_licence_file_matches_its_licence(capsys):
    from pathlib import Path

    import transformer

    root = Path(__file__).resolve().parent.parent
    pyproject = (root / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    licence = re.search(r'^license = "([^"]+)"', pyproject, re.M).group(1)
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"transformer {version}" == f"transformer {transformer.__version__}"
    assert (root / "LICENSE").read_text().splitlines()[0] == f"{licence} License"
