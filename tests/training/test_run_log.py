"""What a run reports on the console and in metrics.jsonl (transformer/training/run_log.py)."""

import json

from tests.corpus import run_config, write_corpus
from transformer.config import RunConfig
from transformer.training.run_log import RunLog
from transformer.training.trainer import train


def test_without_a_terminal_progress_is_one_line_per_log_interval(tmp_path, capsys):
    (tmp_path / "corpus").mkdir()
    corpus = write_corpus(tmp_path / "corpus")
    train(RunConfig.from_dict(run_config(corpus, max_steps=6, log_every=2, eval_every=6)), tmp_path / "run",
          progress_bar=True)  # pytest's stderr is not a terminal
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("train step")]
    assert [line.split(":")[0] for line in lines] == ["train step 2/6", "train step 4/6", "train step 6/6"]
    assert all(" loss " in line and " lr " in line and " tok_s " in line for line in lines)


def test_no_progress_prints_nothing(tmp_path, capsys):
    log = RunLog(tmp_path, total_steps=10, progress=False, tensorboard=False)
    log.start(0, 0)
    log.show(1, {"loss": "1.000"})
    log.close()
    assert capsys.readouterr().err == ""


def test_a_resumed_log_keeps_exactly_the_saved_bytes(tmp_path):
    log = RunLog(tmp_path, total_steps=None, progress=False, tensorboard=False)
    log.start(0, 0)
    log.record({"step": 1, "loss": 2.0})
    saved = log.durable_size()
    log.record({"step": 2, "loss": 1.5})
    (tmp_path / "metrics.jsonl").open("a").write('{"step": 3, "lo')  # a record cut off by a kill
    RunLog(tmp_path, total_steps=None, progress=False, tensorboard=False).start(1, saved)
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        {"step": 1, "loss": 2.0}]
    RunLog(tmp_path, total_steps=None, progress=False, tensorboard=False).start(1, None)  # an old state: kept
    assert (tmp_path / "metrics.jsonl").stat().st_size == saved
