"""`transformer prepare` and data.corpus: prepared, against the reference: tokenizing the text on the fly."""

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tests.corpus import run_config, write_corpus
from transformer.cli import main
from transformer.config import DataConfig, RunConfig
from transformer.data.datasets import load_split
from transformer.data.prepared import PreparedCorpus, prepare
from transformer.training.tasks.translation import TranslationTask
from transformer.training.trainer import train

MAX_LEN = 24  # drops the long pairs the fixture adds


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The test corpus, with pairs the filters drop: blank sides (filter_pairs), longer than MAX_LEN tokens."""
    root = write_corpus(tmp_path_factory.mktemp("corpus"))
    extra = [("", "haus"), ("baum", "   "), ("haus " * 20, "suaho"), ("wort", "trowo " * 20)]
    for side, lines in (("src", [s for s, _ in extra]), ("tgt", [t for _, t in extra])):
        with (root / f"train.{side}").open("a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def cache(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "prepared"
    prepare(_config(corpus).data, out)
    return out


def _config(root, cache=None, data=None, **train) -> RunConfig:
    tree = run_config(root, **train)
    tree["data"].update(max_len=MAX_LEN, **(data or {}))
    if cache is not None:
        tree["data"].update(corpus="prepared", prepared=str(cache))
    return RunConfig.from_dict(tree)


def test_the_cache_gives_the_batches_of_the_text(corpus, cache, tmp_path):
    text = TranslationTask(_config(corpus, max_tokens=96), tmp_path / "text", resume=False)
    cached = TranslationTask(_config(corpus, cache, max_tokens=96), tmp_path / "cached", resume=False)
    assert (tmp_path / "cached" / "tokenizer.json").read_bytes() == (tmp_path / "text" / "tokenizer.json").read_bytes()
    assert len(cached.pairs) == len(text.pairs) < 300  # blank pairs, the long ones and a few more dropped
    assert json.loads((cache / "prepared.json").read_text())["splits"]["train"] == {
        "read": 304, "dropped_blank": 2, "pairs": 302, "src_tokens": int(cached.pairs._indexes[0][:, 1].sum()),
        "tgt_tokens": int(cached.pairs._indexes[1][:, 1].sum()),
        "at_max_len": {"max_len": MAX_LEN, "dropped_long": 302 - len(text.pairs), "dropped_empty_source": 0}}
    for epoch in range(3):
        assert cached.n_batches(epoch) == text.n_batches(epoch) > 10
        for a, b in zip(cached.batches(epoch, 0), text.batches(epoch, 0), strict=True):
            for name in ("src", "tgt_in", "tgt_out"):  # ids, order and padding
                assert torch.equal(getattr(a, name), getattr(b, name))
    resumed = list(cached.batches(1, 5))  # resuming inside an epoch skips the same batches
    assert torch.equal(resumed[0].src, list(text.batches(1, 0))[5].src)
    assert cached.valid_pairs == text.valid_pairs
    assert cached.config.model == text.config.model  # vocabulary and special ids resolved alike


def test_training_on_the_cache_matches_training_on_the_text(corpus, cache, tmp_path):
    train(_config(corpus, max_steps=4, eval_every=2), tmp_path / "text", progress_bar=False)
    train(_config(corpus, cache, max_steps=4, eval_every=2), tmp_path / "cached", progress_bar=False)
    records = {}
    for run in ("text", "cached"):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        records[run] = [{k: v for k, v in json.loads(line).items() if k not in ("minutes", "tok_s")} for line in lines]
    assert records["cached"] == records["text"] and any("valid_bleu" in r for r in records["text"])
    text, cached = (load_file(tmp_path / run / "checkpoints" / "step-4.safetensors") for run in ("text", "cached"))
    for name in text:
        torch.testing.assert_close(cached[name], text[name], rtol=0, atol=0)


def test_the_cache_holds_valid_and_test_as_text(corpus, cache):
    for split in ("valid", "test"):
        assert load_split(_config(corpus, cache).data, split) == load_split(_config(corpus).data, split)
    with pytest.raises(ValueError, match="holds the train split as token ids"):
        load_split(_config(corpus, cache).data, "train")


@pytest.mark.parametrize("change, message", [
    ({"vocab_size": 320}, r"data.vocab_size=320 but the cache .* was prepared with data.vocab_size=300; set "
                          r"data.vocab_size=300 or prepare it again"),
    ({"split_han": False}, r"data.split_han=False but the cache .* was prepared with data.split_han=True"),
])
def test_a_cache_made_with_another_tokenization_is_refused(corpus, cache, tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        TranslationTask(_config(corpus, cache, data=change), tmp_path, resume=False)


def _damage_bin(cache):
    path = cache / "train.tgt.bin"
    path.write_bytes(path.read_bytes()[:-2])


def _swap_tokenizer(cache):
    path = cache / "tokenizer.json"
    path.write_text(path.read_text().replace("<unk>", "<UNK>"))


def _old_version(cache):
    path = cache / "prepared.json"
    path.write_text(path.read_text().replace('"version": 1', '"version": 0'))


@pytest.mark.parametrize("damage, error, message", [
    (_damage_bin, ValueError, r"train.tgt.bin \(\d+ tokens\) and .*train.tgt.idx.npy \(302 pairs\) do not match "
                              r"prepared.json .* the cache is damaged; prepare it again"),
    (_swap_tokenizer, ValueError, r"tokenizer.json is not the tokenizer the cache .* was prepared with"),
    (_old_version, ValueError, r"is format \('transformer-prepared', 0\), this version reads"),
    (lambda cache: (cache / "prepared.json").unlink(), FileNotFoundError, "holds no prepared.json"),
])
def test_a_damaged_cache_is_refused_naming_what_is_wrong(corpus, cache, tmp_path, damage, error, message):
    copy = tmp_path / "copy"
    shutil.copytree(cache, copy)
    damage(copy)
    with pytest.raises(error, match=message):
        PreparedCorpus(copy, _config(corpus, copy).data).pairs(MAX_LEN)


def test_resuming_refuses_a_run_whose_tokenizer_is_not_the_caches(corpus, cache, tmp_path):
    (tmp_path / "tokenizer.json").write_text((cache / "tokenizer.json").read_text().replace("<unk>", "<UNK>"))
    with pytest.raises(ValueError, match="is not the tokenizer the cache"):
        TranslationTask(_config(corpus, cache), tmp_path, resume=True)


def _config_file(tmp_path, root, data=None):
    tree = run_config(root)
    tree["data"].update(data or {})
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(tree))  # JSON is YAML
    return str(path)


@pytest.mark.parametrize("data, out_holds, message", [
    ({"train_src": "missing.src"}, None, "data.train_src='missing.src': not found"),
    ({}, "notes.txt", r"--out .* already holds other files; name a new or empty directory"),
    ({}, "prepared.json", r"--out .* already holds a prepared cache"),
    ({"train_tgt": "{root}/valid.tgt"}, None, r"Parallel files differ in length: .*train.src has 304 lines, "
                                              r".*valid.tgt has 16; each line of one must translate"),
    ({"corpus": "text", "train_text": "{root}/train.src"}, None,
     "transformer prepare reads a translation corpus, data.corpus='bible', 'files' or 'tsv', not 'text'"),
])
def test_prepare_errors_are_one_line_and_exit_2(corpus, tmp_path, capsys, data, out_holds, message):
    data = {k: v.format(root=corpus) for k, v in data.items()}
    out = tmp_path / "out"
    if out_holds:
        out.mkdir()
        (out / out_holds).write_text("{}")
    assert main(["prepare", _config_file(tmp_path, corpus, data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err


def test_prepare_then_train_from_the_command_line(corpus, tmp_path, capsys):
    config = _config_file(tmp_path, corpus)
    assert main(["prepare", config, "--out", str(tmp_path / "cache"), "--set", "data.vocab_size=280"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["pairs"], summary["dtype"]) == (302, "uint16")
    sets = ["--set", "data.corpus=prepared", "--set", f"data.prepared={tmp_path / 'cache'}", "--set",
            "train.max_steps=1", "--set", "train.eval_every=1"]
    assert main(["train", config, "--out", str(tmp_path / "run"), "--no-progress", *sets]) == 2  # vocab_size 300
    assert "data.vocab_size=300 but the cache" in capsys.readouterr().err
    assert main(["train", config, "--out", str(tmp_path / "run"), "--no-progress", *sets,
                 "--set", "data.vocab_size=280"]) == 0
    assert (tmp_path / "run" / "tokenizer.json").read_bytes() == (tmp_path / "cache" / "tokenizer.json").read_bytes()


def test_a_prepare_that_fails_midway_leaves_no_cache(corpus, tmp_path):
    out = tmp_path / "out"
    data = {"valid_tgt": str(corpus / "train.tgt")}  # read after the train split is written
    with pytest.raises(ValueError, match=r"valid.src has 16 lines, .*train.tgt has 304"):
        prepare(_config(corpus, data=data).data, out)
    assert out.is_dir() and not any(out.iterdir())


def test_a_tsv_corpus_prepares_to_the_pairs_of_the_text(corpus, tmp_path):
    src, tgt = ((corpus / f"train.{side}").read_text(encoding="utf-8").splitlines() for side in ("src", "tgt"))
    (tmp_path / "train.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in zip(src, tgt, strict=True)))
    data = {"corpus": "tsv", "train_tsv": str(tmp_path / "train.tsv")}
    tree = run_config(corpus)
    tree["data"] = {"vocab_size": 300, "min_frequency": 1, "max_len": MAX_LEN, **data}
    config = RunConfig.from_dict(tree)
    prepare(config.data, tmp_path / "cache")
    text = TranslationTask(config, tmp_path / "text", resume=False)
    prepared = DataConfig(**{**tree["data"], "corpus": "prepared", "prepared": str(tmp_path / "cache")})
    cached = TranslationTask(config.replace(data=prepared), tmp_path / "cached", resume=False)
    assert list(cached.pairs) == text.pairs and len(text.pairs) > 250
    assert cached.valid_data is None and text.valid_data is None
