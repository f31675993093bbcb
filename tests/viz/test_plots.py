"""`transformer plot`: the positional-encoding matrix and the training curves as PNGs of the expected size."""

import json

import numpy as np
import pytest
from PIL import Image

from transformer.cli import main


def test_positions_png_draws_the_sinusoid_table(tmp_path, capsys):
    out = tmp_path / "pe.png"
    assert main(["plot", "--positions", "40", "--d-model", "32", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    with Image.open(out) as image:
        assert image.size == (800, 500)
        assert np.asarray(image.convert("L")).std() > 10  # stripes, not a blank page


def test_metrics_png_is_drawn_by_plot_loss(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    records = [{"step": s, "loss": 5.0 / s} for s in range(1, 20)] + [{"step": 10, "valid_loss": 1.0,
                                                                        "valid_bleu": 3.0}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    assert main(["plot", "--metrics", str(metrics), "--out", str(tmp_path / "loss.png")]) == 0
    with Image.open(tmp_path / "loss.png") as image:
        assert image.size == (700, 400)  # plot_loss: 7 x 4 inches at 100 dpi


@pytest.mark.parametrize(("extra", "message"), [
    ([], "give one of --metrics FILE"),
    (["--positions", "3", "--metrics", "m.jsonl"], "give one of --metrics FILE"),
    (["--positions", "0"], "--positions 0"),
    (["--metrics", "missing.jsonl"], "no such file"),
])
def test_errors_are_one_line_and_exit_2(tmp_path, extra, message, capsys):
    assert main(["plot", "--out", str(tmp_path / "x.png"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
