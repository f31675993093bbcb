"""`transformer average-checkpoints`: the element-wise mean of a run's last checkpoints (section 6.1), written
as a weights file that `evaluate --weights`, `translate` (as the model's model.safetensors) and
`train.init_from` read like any other."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from transformer.cli_io import check_output

TRAIN_STATE = "train_state.pt"
_STEP_FILE = re.compile(r"step-(\d+)\.safetensors")
_OWN_FILES = ("model.safetensors", "config.yaml", "tokenizer.json", "target_tokenizer.json", TRAIN_STATE,
              "manifest.json", "metrics.jsonl")  # files of the run that --out must not overwrite


def add_average_checkpoints(commands: argparse._SubParsersAction) -> None:
    """Register the `average-checkpoints` subcommand."""
    parser = commands.add_parser("average-checkpoints", help="average the weights of a run's last checkpoints "
                                                             "into a safetensors file")
    parser.add_argument("--model", required=True, type=Path, help="model directory written by `transformer train`")
    parser.add_argument("--last", type=int, metavar="K",
                        help="average the last K checkpoints (default: the run's train.average_last)")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE",
                        help="safetensors file to write, e.g. MODEL/averaged.safetensors (then `transformer "
                             "evaluate --weights averaged.safetensors`); not the model's own model.safetensors")


def run_checkpoints(model_dir: Path) -> list[Path]:
    """The checkpoints of the run in `model_dir`, oldest first: those its train_state.pt lists, else the
    checkpoints/step-N.safetensors files in order of N. Each listed name must lead inside `model_dir`."""
    import torch

    from transformer.model_dir import inside

    state_file = model_dir / TRAIN_STATE
    if not state_file.is_file():
        found = [(int(m.group(1)), path) for path in (model_dir / "checkpoints").glob("step-*.safetensors")
                 if (m := _STEP_FILE.fullmatch(path.name))]
        return [path for _, path in sorted(found)]
    state = torch.load(state_file, map_location="cpu", weights_only=True, mmap=True)
    names = state.get("extra", {}).get("progress", {}).get("checkpoints", [])
    paths = [inside(model_dir, name, "checkpoint") for name in names]
    for name, path in zip(names, paths, strict=True):
        if not path.is_file():
            raise FileNotFoundError(f"{state_file} lists the checkpoint {name}, which is missing; restore it, or "
                                    f"move {state_file.name} away to average the checkpoints/step-N files on disk")
    return paths


def _last(available: list[Path], last: int | None, average_last: int, model_dir: Path) -> list[Path]:
    """The last `last` of the run's checkpoints (default: its train.average_last), refused with the fix."""
    if last is None and average_last < 1:
        raise ValueError(f"{model_dir}/config.yaml has train.average_last={average_last} (off), so there is no "
                         "default; pass --last K")
    k = average_last if last is None else last
    if k < 1:
        raise ValueError(f"--last {k}: average at least 1 checkpoint; pass --last K with K >= 1")
    if not available:
        raise FileNotFoundError(f"{model_dir} has no checkpoints (train_state.pt lists none and checkpoints/ holds "
                                "no step-N.safetensors); train until a validation writes one (train.eval_every)")
    if k > len(available):
        raise ValueError(f"--last {k}: {model_dir} keeps only {len(available)} checkpoint(s); pass --last "
                         f"{len(available)} or fewer (a run keeps train.average_last of them)")
    return available[-k:]


def _check_not_own(out: Path, model_dir: Path, checkpoints: list[Path]) -> None:
    """Refuse an --out that would overwrite a file of the run: its weights, config, tokenizer or checkpoints."""
    target = out.resolve()
    own = [(model_dir / name).resolve() for name in _OWN_FILES] + [p.resolve() for p in checkpoints]
    if target in own:
        raise ValueError(f"--out {out} would overwrite the run's own {out.name}; name a new file, e.g. --out "
                         f"{model_dir / 'averaged.safetensors'}")


def average_checkpoints(model_dir: str | Path, out: str | Path, last: int | None = None) -> list[Path]:
    """Write the mean of the last `last` checkpoints of the run in `model_dir` (default: its
    train.average_last) to the safetensors file `out`, checked against the run's model; returns the averaged
    checkpoints, oldest first."""
    from transformer.model_dir import apply_weights, average_weights, read_config, save_weights
    from transformer.models import build_model

    model_dir, out = Path(model_dir), Path(out)
    check_output(out, "--out")
    config = read_config(model_dir)
    available = run_checkpoints(model_dir)
    _check_not_own(out, model_dir, available)
    checkpoints = _last(available, last, config.train.average_last, model_dir)
    model = build_model(config.model)
    apply_weights(model, average_weights(checkpoints))
    save_weights(model, out)
    return checkpoints


def cmd_average_checkpoints(args: argparse.Namespace) -> None:
    checkpoints = average_checkpoints(args.model, args.out, args.last)
    root = args.model.resolve()
    names = [str(path.relative_to(root)) if path.is_relative_to(root) else str(path) for path in checkpoints]
    print(f"averaged {len(names)} checkpoint(s) of {args.model}: {', '.join(names)} -> {args.out}")
    print(json.dumps({"out": str(args.out), "model": str(args.model), "averaged": len(names),
                      "checkpoints": names}))
