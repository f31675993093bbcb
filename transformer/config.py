"""Typed, frozen configuration: ModelConfig, DataConfig, TrainConfig, DecodeConfig and RunConfig (YAML loading
and `--set a.b=c` overrides: config_tree.py).

Every dataclass validates itself in __post_init__ and raises ValueError naming the offending values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from transformer.config_tree import (  # noqa: F401  (apply_overrides, check_override_sections: re-exported)
    apply_overrides,
    check,
    check_known,
    check_override_sections,
    check_section,
    from_dict,
    load_yaml,
    one_of,
    to_dict,
)
from transformer.model_config import (  # noqa: F401  (re-exported: a run's config has a model section)
    ACTIVATION_NAMES,
    BAG_TYPES,
    EMBED_POOLINGS,
    IMAGE_RESAMPLES,
    MODEL_TYPES,
    PRESETS,
    RECURRENT_TYPES,
    ModelConfig,
    model_config_from_dict,
)

CORPORA = ("bible", "files", "tsv", "text", "digits", "prepared")
BIBLE_SPLITS = ("books", "genres")  # the held-out schemes of data/bible_books.py (a test keeps the two equal)
SPLIT_NAMES = ("train", "valid", "test")  # a corpus's splits; DataConfig's {split}_src/_tgt/_tsv keys use them


@dataclass(frozen=True)
class DataConfig:
    """Where the parallel text comes from and how it is tokenized.

    corpus: "bible" (codes `src`/`tgt`, held-out books split), "files" (one segment a line), "tsv", for the
    lm task "text", or for the image task "digits" (scikit-learn's 8 x 8 digits, transformer/data/images.py).
    For "files": train_src/train_tgt (+ valid_*, test_*); for "tsv": train_tsv (+ valid_tsv,
    test_tsv); for "text": train_text (+ valid_text, test_text). The lm task on the Bible reads the target side:
    the train books of `translations` (default: `tgt` alone), the valid and test books of `tgt`.
    """

    corpus: str = "bible"
    src: str = "e"
    tgt: str = "2"
    train_src: str | None = None
    train_tgt: str | None = None
    valid_src: str | None = None
    valid_tgt: str | None = None
    test_src: str | None = None
    test_tgt: str | None = None
    train_tsv: str | None = None
    valid_tsv: str | None = None
    test_tsv: str | None = None
    train_text: str | None = None  # corpus "text" (the lm task): one segment a line
    valid_text: str | None = None
    test_text: str | None = None
    translations: tuple[str, ...] = ()  # lm on the Bible: the train books of these translations (default: tgt)
    bible_split: str = "books"  # the Bible's held-out books: one of BIBLE_SPLITS (data/bible_books.py)
    label_fraction: float = 1.0  # classify: train on this share of the labelled examples (stratified, seeded)
    max_shift: int = 0  # image task: each training image moves by up to this many pixels each way (augmentation)
    vocab_size: int = 8000
    min_frequency: int = 2
    max_len: int = 256  # pairs with a side longer than this many tokens are dropped from training
    split_han: bool = True  # each Han character its own pre-token before BPE (train_bpe; docs/RESULTS.md)
    prepared: str | None = None  # corpus "prepared": a directory written by `transformer prepare` (data/prepared.py)

    def __post_init__(self) -> None:
        object.__setattr__(self, "src", str(self.src))  # YAML reads the Bible code 2 as a number
        object.__setattr__(self, "tgt", str(self.tgt))
        object.__setattr__(self, "translations", tuple(str(code) for code in self.translations))
        check(self.corpus in CORPORA, f"data.corpus={self.corpus!r}: use 'bible', 'files' (src/tgt text files), "
               "'tsv', 'text' (one segment a line, for the lm task), 'digits' (the image task) or 'prepared' "
               "(a `transformer prepare` cache)")
        if self.corpus == "prepared":
            check(bool(self.prepared), "data.corpus='prepared' needs data.prepared (the directory written by "
                  "`transformer prepare CONFIG --out DIR`)")
        if self.corpus == "text":
            check(bool(self.train_text), "data.corpus='text' needs data.train_text (one segment a line)")
        if self.corpus == "files":
            check(bool(self.train_src and self.train_tgt),
                   "data.corpus='files' needs data.train_src and data.train_tgt (one segment a line)")
        if self.corpus == "tsv":
            check(bool(self.train_tsv), "data.corpus='tsv' needs data.train_tsv (source<TAB>target a line)")
        check(self.bible_split in BIBLE_SPLITS, f"data.bible_split={self.bible_split!r}: use {one_of(BIBLE_SPLITS)}")
        check(isinstance(self.label_fraction, (int, float)) and 0 < self.label_fraction <= 1,
              f"data.label_fraction={self.label_fraction!r} must be in (0, 1]: the share of the training labels used")
        check(isinstance(self.split_han, bool), f"data.split_han={self.split_han!r}: use true or false")
        check(isinstance(self.max_shift, int) and self.max_shift >= 0,
               f"data.max_shift={self.max_shift!r} must be an integer >= 0 (pixels; 0 = no augmentation)")
        check(self.vocab_size > 0 and self.max_len > 0 and self.min_frequency > 0,
               f"data.vocab_size={self.vocab_size}, data.max_len={self.max_len} and "
               f"data.min_frequency={self.min_frequency} must be positive")


@dataclass(frozen=True)
class TrainConfig:
    """The training loop: budget, batching, optimizer and schedule (section 5), checkpoints."""

    max_steps: int | None = None
    max_minutes: float | None = None  # wall-clock budget of the training loop (validation excluded)
    max_epochs: int | None = None
    max_tokens: int = 4096  # padded tokens per side per micro-batch
    batch_size: int = 64  # images per micro-batch (the image task; text tasks batch by max_tokens)
    accumulate: int = 1  # micro-batches per optimizer update
    lr: float = 7e-4  # peak learning rate, reached at step `warmup`, then ~ 1/sqrt(step)
    warmup: int = 1000
    cooldown: float = 0.0  # decay the lr linearly to 0 over this last fraction of the budget (steps or minutes)
    betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-9
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    clip_norm: float | None = 1.0
    bf16: bool = False  # bf16 autocast (softmax and loss stay fp32)
    seed: int = 0
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    log_every: int = 50
    eval_every: int = 500  # validation loss and BLEU every this many updates (and at the end)
    eval_limit: int | None = None  # validate BLEU on the first N valid segments only
    average_last: int = 0  # average the weights of the last k evaluations (section 6.1); 0 = off
    snapshot_minutes: tuple[float, ...] = ()  # also keep the weights as they are after these minutes
    init_from: str | None = None  # start from this model directory's weights (fine-tuning); new heads start fresh
    patience: int | None = None  # early stopping: stop after this many validations in a row without a better metric
    tensorboard: bool = False  # also write the metrics as TensorBoard scalars to <out>/tensorboard (pip tensorboard)
    dist_timeout: float = 1800.0  # seconds a process waits for the others (torchrun runs) before failing
    parallel: str = "ddp"  # with torchrun: ddp (a whole model per process) or fsdp (sharded, FSDP2)

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):
            object.__setattr__(self, "betas", tuple(self.betas))
        if isinstance(self.snapshot_minutes, list):
            object.__setattr__(self, "snapshot_minutes", tuple(self.snapshot_minutes))
        check(any(x is not None for x in (self.max_steps, self.max_minutes, self.max_epochs)),
               "set at least one of train.max_steps, train.max_minutes, train.max_epochs")
        for name in ("max_steps", "max_minutes", "max_epochs"):
            value = getattr(self, name)
            check(value is None or value > 0,
                   f"train.{name}={value} must be > 0 (a budget of nothing trains nothing); raise it, "
                   "or leave it unset (null) to let the other budgets decide")
        check(self.max_tokens > 0 and self.batch_size > 0 and self.accumulate > 0 and self.warmup > 0,
               f"train.max_tokens={self.max_tokens}, batch_size={self.batch_size}, accumulate={self.accumulate}, "
               f"warmup={self.warmup} must be > 0")
        check(0 < self.lr < float("inf"), f"train.lr={self.lr} must be a positive finite number")
        check(0.0 <= self.cooldown <= 1.0,
               f"train.cooldown={self.cooldown} must be in [0, 1]: the last fraction of the budget over which "
               "the learning rate decays to 0 (0 = the paper's schedule alone)")
        check(0.0 <= self.label_smoothing < 1.0, f"train.label_smoothing={self.label_smoothing} must be in [0, 1)")
        check(self.eval_every > 0 and self.log_every > 0,
               f"train.eval_every={self.eval_every} and log_every={self.log_every} must be > 0")
        check(self.average_last >= 0, f"train.average_last={self.average_last} must be >= 0")
        check(self.patience is None or self.patience >= 1,
              f"train.patience={self.patience} must be >= 1 (validations without improvement), or null for none")
        check(self.dist_timeout > 0, f"train.dist_timeout={self.dist_timeout} must be > 0 seconds, e.g. 1800")
        check(self.parallel in ("ddp", "fsdp"), f"train.parallel={self.parallel!r} must be 'ddp' or 'fsdp'")


@dataclass(frozen=True)
class DecodeConfig:
    """Beam search settings (section 6.1): beam 4, length penalty alpha 0.6, max length = source + 50."""

    beam: int = 4
    alpha: float = 0.6
    max_len_a: float = 1.0
    max_len_b: int = 50
    batch_size: int = 64
    prefix: str = ""  # text put before every source line before tokenizing (T5's task: "translate X to Y: ")

    def __post_init__(self) -> None:
        check(self.beam >= 1, f"decode.beam={self.beam} must be >= 1")
        check(0 <= self.alpha < float("inf"), f"decode.alpha={self.alpha} must be a finite number >= 0")
        check(self.batch_size >= 1, f"decode.batch_size={self.batch_size} must be >= 1")
        # Checked here too (decoding checks them again), so that `train` refuses them before training, not at
        # its first validation.
        check(0 <= self.max_len_a < float("inf"),
              f"decode.max_len_a={self.max_len_a} must be a finite number >= 0 (output tokens per source token)")
        check(self.max_len_b >= 0, f"decode.max_len_b={self.max_len_b} must be >= 0 (output tokens beyond "
                                   "max_len_a * source length)")


# task: what a run trains the model to do, and the model types each task trains (training/tasks/), the first
# being the one a config without model.type gets.
TASK_MODEL_TYPES = {"translation": ("encoder_decoder", *RECURRENT_TYPES), "lm": ("decoder_only",),
                    "mlm": ("encoder_only",), "classify": ("encoder_only", *BAG_TYPES), "image": ("vision",)}


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs; saved resolved as config.yaml in the model directory."""

    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    decode: DecodeConfig
    task: str = "translation"  # one of TASK_MODEL_TYPES; a config.yaml without it is a translation model's

    def __post_init__(self) -> None:
        check(self.task in TASK_MODEL_TYPES, f"task={self.task!r}: use {one_of(tuple(TASK_MODEL_TYPES))}")
        wanted = TASK_MODEL_TYPES[self.task]
        check(self.model.type in wanted, f"task={self.task!r} trains a model.type={wanted[0]!r}, but model.type="
               f"{self.model.type!r}; set model.type={wanted[0]}" + (
                   f" (or {one_of(wanted[1:])})" if len(wanted) > 1 else ""))
        check(self.task not in ("lm", "mlm") or self.data.corpus in ("bible", "text"),
               f"task={self.task!r} reads data.corpus='bible' or 'text' (one segment a line), not "
               f"{self.data.corpus!r}")
        check(self.task != "classify" or self.data.corpus in ("bible", "tsv"),
              f"task='classify' reads data.corpus='bible' (verses labelled with their genre) or 'tsv' (text TAB "
              f"label), not {self.data.corpus!r}")
        check((self.task == "image") == (self.data.corpus == "digits"),
               f"task={self.task!r} and data.corpus={self.data.corpus!r} do not fit: the image task reads "
               "data.corpus='digits', and only it does")

    @classmethod
    def from_dict(cls, tree: dict[str, Any]) -> RunConfig:
        check_known(tree, ["task", "model", "data", "train", "decode"], "config section ")
        for section in ("model", "data", "train", "decode"):
            check_section(tree.get(section) or {}, section)
        task = tree.get("task", "translation")
        model = dict(tree.get("model") or {})
        if task in TASK_MODEL_TYPES:
            model.setdefault("type", TASK_MODEL_TYPES[task][0])  # the task names the architecture
        return cls(
            model=model_config_from_dict(model),
            data=from_dict(DataConfig, tree.get("data") or {}, "data"),
            train=from_dict(TrainConfig, tree.get("train") or {}, "train"),
            decode=from_dict(DecodeConfig, tree.get("decode") or {}, "decode"),
            task=task,
        )

    @classmethod
    def load(cls, path: str, overrides: list[str] | None = None) -> RunConfig:
        """A config file with `--set` overrides. With train.init_from, the model section starts from that model
        directory's config.yaml, and the keys the file gives (a new head's n_classes, dropout) change it."""
        tree = apply_overrides(load_yaml(path), overrides or [])
        check_section(tree.get("train") or {}, "train")
        init_from = (tree.get("train") or {}).get("init_from")
        if init_from:
            pretrained = Path(init_from) / "config.yaml"
            check(pretrained.is_file(), f"train.init_from={init_from!r} holds no config.yaml; name a model directory "
                  "written by `transformer train` (or train it first)")
            base = {k: v for k, v in (load_yaml(str(pretrained)).get("model") or {}).items()
                    if k not in ("n_classes", "labels")}  # a head of the pretraining task is not the new one's
            tree = {**tree, "model": {**base, **(tree.get("model") or {})}}
        return cls.from_dict(tree)

    def to_yaml(self) -> str:
        tree: dict[str, Any] = {name: to_dict(getattr(self, name)) for name in ("model", "data", "train", "decode")}
        for section in tree.values():
            for key, value in section.items():
                if isinstance(value, tuple):
                    section[key] = list(value)
        return yaml.safe_dump({"task": self.task, **tree}, sort_keys=False)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)
