"""`transformer translate` streaming, scores and n-best lists, and `transformer evaluate` of files (issue #16,
item 6), on a tiny model directory trained as conftest.py trains one."""

import dataclasses
import io
import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
import torch

from tests.conftest import _trained
from tests.corpus import run_config, write_corpus
from transformer.cli import main
from transformer.data.batching import pad_ids
from transformer.decoding import beam_search, greedy_search
from transformer.decoding.greedy import greedy_search_scored
from transformer.decoding.protocol import banned_ids
from transformer.inference import load_model_dir, translate

ROOT = Path(__file__).resolve().parent.parent
LINES = ["haus baum", "wort gott licht", "erde", "himmel mann frau katze hund wasser", "gott"]


@pytest.fixture(scope="module")
def translator_dir(tmp_path_factory):
    """conftest's model directory, trained for 40 updates instead of 4: enough for non-empty translations of
    different lengths, and n-best lists of different texts."""
    corpus = write_corpus(tmp_path_factory.mktemp("corpus"))
    return _trained(tmp_path_factory, run_config(corpus, max_steps=40, eval_every=40), "model")


@pytest.fixture(scope="module")
def loaded(translator_dir):
    """The model of translator_dir (packed, as `transformer translate` loads it), its tokenizer and config."""
    return load_model_dir(translator_dir, for_decoding=True)


def _run(argv, capsys) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def _rows(out: str) -> list[list[str]]:
    return [line.split("\t") for line in out.splitlines()]


def _readline(stream, seconds: float = 60.0) -> bytes:
    """One line from a pipe, or fail after `seconds`: the line must arrive while the writer keeps stdin open."""
    ready, _, _ = select.select([stream], [], [], seconds)
    assert ready, f"no output within {seconds} s"
    return stream.readline()


@pytest.mark.parametrize("stdin", ["pipe", "terminal"])
def test_translate_writes_each_line_before_stdin_closes(translator_dir, loaded, stdin):
    """A pipe with --buffer-size 1, or a terminal (buffer size 1 by default): each translation comes back while
    stdin is still open, and equals the library's."""
    model, tokenizer, config = loaded
    decode = dataclasses.replace(config.decode, beam=1)
    expected = translate(model, tokenizer, LINES[:2], decode, config.data.max_len)
    argv = [sys.executable, "-m", "transformer", "translate", "--model", str(translator_dir), "--beam", "1"]
    if stdin == "pipe":
        proc = subprocess.Popen([*argv, "--buffer-size", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, cwd=ROOT)
        writer = proc.stdin
    else:
        controller, terminal = os.openpty()
        proc = subprocess.Popen(argv, stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
        os.close(terminal)
        writer = os.fdopen(controller, "wb", buffering=0)
    try:
        for line, translation in zip(LINES[:2], expected, strict=True):
            writer.write(f"{line}\n".encode())
            writer.flush()
            assert _readline(proc.stdout).decode().rstrip("\n") == translation
        if stdin == "terminal":
            writer.write(b"\x04")  # end of input at the start of a line; the terminal stays open until the end
        else:
            writer.close()
        assert proc.wait(timeout=60) == 0
        assert proc.stdout.read() == b""
    finally:
        proc.kill()
        proc.stdout.close()
        writer.close()


def test_blank_lines_pass_through_and_the_stream_equals_translate_of_all_lines(translator_dir, loaded, capsys,
                                                                             monkeypatch):
    model, tokenizer, config = loaded
    lines = ["", LINES[0], "   ", LINES[1], LINES[2], "", LINES[3], LINES[4]]
    decode = dataclasses.replace(config.decode, beam=2, alpha=0.6)
    translations = iter(translate(model, tokenizer, LINES, decode, config.data.max_len))
    expected = "".join((next(translations) if line.strip() else "") + "\n" for line in lines)
    stdin = io.TextIOWrapper(io.BytesIO("".join(line + "\n" for line in lines).encode()), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", stdin)  # read through its .buffer, as a real stdin
    argv = ["translate", "--model", str(translator_dir), "--beam", "2", "--alpha", "0.6", "--buffer-size", "3"]
    assert _run([*argv, "--input", "-"], capsys) == expected


def test_undecodable_stdin_is_named_by_line(translator_dir, capsys, monkeypatch):
    stdin = io.TextIOWrapper(io.BytesIO("haus\nwort gr\xfcn\n".encode("latin-1")), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", stdin)
    err = _error(["translate", "--model", str(translator_dir), "--buffer-size", "1"], capsys)
    assert "<stdin>:2: bytes b'\\xfc' are not UTF-8" in err and "iconv -f LATIN1 -t UTF-8" in err


def _sources(tokenizer, config, lines):
    return pad_ids(tokenizer.encode_batch(lines, add_special_tokens=True, max_len=config.data.max_len),
                   tokenizer.pad_id)


def test_nbest_writes_n_ranked_lines_per_input_with_the_beam_searchs_scores(translator_dir, loaded, tmp_path, capsys):
    model, tokenizer, config = loaded
    (tmp_path / "in.txt").write_text("".join(line + "\n" for line in LINES), encoding="utf-8")
    argv = ["translate", "--model", str(translator_dir), "--beam", "3", "--alpha", "0.6", "--input",
            str(tmp_path / "in.txt")]
    best = _run(argv, capsys).splitlines()
    rows = _rows(_run([*argv, "--nbest", "3", "--buffer-size", "2"], capsys))
    assert [int(row[0]) for row in rows] == [i for i in range(len(LINES)) for _ in range(3)]
    assert all(row[2] for row in rows)  # the model is trained enough for non-empty translations
    ids = dict(pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id)
    for i, line in enumerate(LINES):
        mine = rows[3 * i : 3 * i + 3]
        scores = [float(row[1]) for row in mine]
        assert scores == sorted(scores, reverse=True)
        assert mine[0][2] == best[i]
        (theirs,) = beam_search(model, _sources(tokenizer, config, [line]), beam_size=3, alpha=0.6, n_best=3,
                                max_len_a=config.decode.max_len_a, max_len_b=config.decode.max_len_b, **ids)
        assert scores == pytest.approx([h.score for h in theirs], abs=1e-5)
        assert [row[2] for row in mine] == [tokenizer.decode(h.tokens) for h in theirs]


def test_greedy_print_scores_is_the_teacher_forced_sum_of_token_log_probs(translator_dir, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("".join(line + "\n" for line in LINES), encoding="utf-8")
    out = _run(["translate", "--model", str(translator_dir), "--beam", "1", "--print-scores", "--input",
                str(tmp_path / "in.txt")], capsys)
    model, tokenizer, config = load_model_dir(translator_dir)  # unpacked weights, a full forward pass
    for line, row in zip(LINES, out.splitlines(), strict=True):
        score, text = row.split("\t")
        src = _sources(tokenizer, config, [line])
        (tokens,) = greedy_search(model, src, pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id,
                                  eos_id=tokenizer.eos_id, max_len_a=config.decode.max_len_a,
                                  max_len_b=config.decode.max_len_b)
        assert tokenizer.decode(tokens) == text and tokens
        limit = int(config.decode.max_len_a * src.size(1) + config.decode.max_len_b)
        targets = tokens + ([tokenizer.eos_id] if len(tokens) < limit else [])  # no EOS when cut at the limit
        with torch.no_grad():
            logits = model(src, torch.tensor([[tokenizer.bos_id, *targets[:-1]]]))[0]  # (T, V)
        logits[:, banned_ids(tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id)] = float("-inf")
        log_probs = torch.log_softmax(logits.double(), dim=-1)[torch.arange(len(targets)), targets]
        assert float(score) == pytest.approx(float(log_probs.sum()), abs=1e-4)
        assert float(score) < 0


def test_nbest_above_the_beam_and_bad_sizes_are_one_line_errors(translator_dir, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("haus\n", encoding="utf-8")
    argv = ["translate", "--model", str(translator_dir), "--input", str(tmp_path / "in.txt")]
    err = _error([*argv, "--beam", "2", "--nbest", "3"], capsys)
    assert "--nbest 3 exceeds the beam size 2" in err and "--beam 3" in err
    assert "--nbest 2 exceeds the beam size 1" in _error([*argv, "--beam", "1", "--nbest", "2"], capsys)
    assert "--nbest 0 must be at least 1" in _error([*argv, "--nbest", "0"], capsys)
    assert "--buffer-size 0 must be at least 1" in _error([*argv, "--buffer-size", "0"], capsys)
    assert f"No such file: {tmp_path / 'no.txt'}" in _error([*argv[:3], "--input", str(tmp_path / "no.txt")], capsys)


def test_ctranslate2_engine_writes_the_torch_engines_scores(translator_dir, tmp_path, capsys):
    pytest.importorskip("ctranslate2")
    assert main(["export-ct2", "--model", str(translator_dir)]) == 0
    capsys.readouterr()
    (tmp_path / "in.txt").write_text("".join(line + "\n" for line in ["", *LINES]), encoding="utf-8")
    argv = ["translate", "--model", str(translator_dir), "--alpha", "0", "--input", str(tmp_path / "in.txt")]
    greedy = {engine: _rows(_run([*argv, "--beam", "1", "--print-scores", "--engine", engine], capsys))
              for engine in ("torch", "ctranslate2")}
    assert greedy["torch"][0] == greedy["ctranslate2"][0] == ["0.000000", ""]  # the blank line
    assert len(greedy["ctranslate2"]) == len(greedy["torch"]) == 1 + len(LINES)
    for ours, theirs in zip(greedy["torch"], greedy["ctranslate2"], strict=True):
        assert theirs[1] == ours[1] and float(theirs[0]) == pytest.approx(float(ours[0]), abs=1e-4)
    nbest = {engine: _rows(_run([*argv, "--beam", "2", "--nbest", "2", "--engine", engine], capsys))
             for engine in ("torch", "ctranslate2")}
    assert [int(row[0]) for row in nbest["ctranslate2"]] == [0, *(i for i in range(1, 1 + len(LINES)) for _ in "ab")]
    for i in range(1, 1 + len(LINES)):  # the best of each line: the same text, log P at alpha 0 in both
        ours, theirs = nbest["torch"][2 * i - 1], nbest["ctranslate2"][2 * i - 1]
        assert theirs[2] == ours[2] and float(theirs[1]) == pytest.approx(float(ours[1]), abs=1e-4)
        assert float(nbest["ctranslate2"][2 * i][1]) <= float(theirs[1])


# ------------------------------------------------------------------------------------------------ evaluate


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_evaluate_hyp_ref_is_sacrebleus_corpus_bleu_without_a_model(tmp_path, capsys):
    hyps = ["the cat sat on the mat", "a dog barked loudly today", "", "it is raining"]
    refs = ["the cat sat on a mat", "the dog barked loudly", "nothing here", "it rains"]
    (tmp_path / "hyp.txt").write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    (tmp_path / "ref.txt").write_text("".join(r + "\n" for r in refs), encoding="utf-8")
    out = _run(["evaluate", "--hyp", str(tmp_path / "hyp.txt"), "--ref", str(tmp_path / "ref.txt")], capsys)
    bleu, chrf = sacrebleu.corpus_bleu(hyps, [refs]), sacrebleu.corpus_chrf(hyps, [refs])
    record = _last_json(out)
    assert record["bleu"] == round(bleu.score, 2) and record["chrf"] == round(chrf.score, 2) and record["n"] == 4
    assert f"BLEU = {bleu.score:.2f}" in out and "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" in out


def test_evaluate_src_ref_scores_what_translate_writes(translator_dir, tmp_path, capsys):
    src = ["haus baum", "", "wort gott licht", "erde himmel"]
    refs = ["suah muab", "", "trow ttog thcil", "edre lemmih"]
    for name, lines in (("src.txt", src), ("ref.txt", refs)):
        (tmp_path / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    flags = ["--model", str(translator_dir), "--beam", "2"]
    _run(["translate", *flags, "--input", str(tmp_path / "src.txt"), "--output", str(tmp_path / "hyp.txt")], capsys)
    ref = ["--ref", str(tmp_path / "ref.txt")]
    scored = _last_json(_run(["evaluate", "--hyp", str(tmp_path / "hyp.txt"), *ref], capsys))
    record = _last_json(_run(["evaluate", *flags, "--src", str(tmp_path / "src.txt"), *ref, "--output",
                              str(tmp_path / "evaluate.txt")], capsys))
    assert (record["bleu"], record["chrf"], record["n"]) == (scored["bleu"], scored["chrf"], scored["n"]) != (0, 0, 4)
    assert record["beam"] == 2 and record["src"] == str(tmp_path / "src.txt")
    assert (tmp_path / "evaluate.txt").read_text(encoding="utf-8") == (tmp_path / "hyp.txt").read_text(encoding="utf-8")


def test_evaluate_count_mismatch_exits_2_without_a_traceback(tmp_path):
    (tmp_path / "hyp.txt").write_text("a\nb\nc\n", encoding="utf-8")
    (tmp_path / "ref.txt").write_text("a\nb\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "transformer", "evaluate", "--hyp", str(tmp_path / "hyp.txt"),
                             "--ref", str(tmp_path / "ref.txt")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"error: --hyp {tmp_path / 'hyp.txt'} has 3 lines but --ref {tmp_path / 'ref.txt'} has "
                             "2; they must be aligned line by line (same count)\n")


def test_evaluate_flag_combinations_and_missing_files_are_one_line_errors(translator_dir, tmp_path, capsys):
    (tmp_path / "three.txt").write_text("a\nb\nc\n", encoding="utf-8")
    (tmp_path / "two.txt").write_text("a\nb\n", encoding="utf-8")
    three, two, missing = (str(tmp_path / name) for name in ("three.txt", "two.txt", "missing.txt"))
    model = ["--model", str(translator_dir)]
    cases = [
        (["--hyp", three], f"--hyp {three} needs --ref R"),
        ([*model, "--src", three], f"--src {three} needs --ref R"),
        ([*model, "--ref", three], f"--ref {three} needs --src F"),
        ([*model, "--hyp", three, "--ref", three], "--hyp scores existing translations without a model"),
        (["--split", "test"], "evaluate needs --model DIR, or --hyp H --ref R"),
        ([*model, "--src", three, "--ref", two], f"--src {three} has 3 lines but --ref {two} has 2"),
        (["--hyp", missing, "--ref", two], f"No such file: {missing}"),
        (["--hyp", three, "--ref", missing], f"No such file: {missing}"),
        ([*model, "--src", missing, "--ref", two], f"No such file: {missing}"),
    ]
    for flags, message in cases:
        assert message in _error(["evaluate", *flags], capsys), flags


@pytest.mark.parametrize("min_new_tokens", [0, 2])
def test_greedy_search_scored_gives_greedys_tokens_and_the_beam_1_log_prob(loaded, min_new_tokens):
    model, tokenizer, config = loaded
    src = _sources(tokenizer, config, LINES)
    options = dict(pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, max_len_b=4,
                   min_new_tokens=min_new_tokens)
    scored = greedy_search_scored(model, src, **options)
    assert [h.tokens for h in scored] == greedy_search(model, src, **options)
    beam = [found[0] for found in beam_search(model, src, beam_size=1, alpha=0.0, **options)]
    assert [h.tokens for h in scored] == [h.tokens for h in beam]
    assert [h.score for h in scored] == [h.log_prob for h in scored]
    assert [h.log_prob for h in scored] == pytest.approx([h.log_prob for h in beam], abs=1e-5)


def test_a_reader_that_stops_early_ends_translate_quietly(translator_dir, tmp_path):
    """`translate ... | head -1`: the closed pipe ends the command without a traceback (exit 141, as SIGPIPE)."""
    (tmp_path / "in.txt").write_text("".join(f"{LINES[i % len(LINES)]}\n" for i in range(400)), encoding="utf-8")
    argv = [sys.executable, "-m", "transformer", "translate", "--model", str(translator_dir), "--beam", "1",
            "--buffer-size", "8", "--input", str(tmp_path / "in.txt")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    _readline(proc.stdout)
    proc.stdout.close()  # as `head -1` does once it has its line
    assert proc.wait(timeout=120) == 141
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert "Traceback" not in err and "BrokenPipe" not in err, err
