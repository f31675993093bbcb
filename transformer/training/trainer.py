"""The one training loop, for every task: budget (steps, minutes, epochs), Adam + the section 5.3 learning
rate, bf16, clipping and accumulation, validation cadence, best, averaged and snapshot weights, exact resume,
the progress bar, metrics.jsonl and loss.png. What differs between tasks (data, loss, validation metric) is
the Task's (training/tasks/).

It writes a model directory: config.yaml (the resolved config), tokenizer.json, model.safetensors (the best
weights on the validation metric, or the average of the last checkpoints when that is better), checkpoints/,
train_state.pt (what --resume needs), manifest.json (the hashes of the binary files), metrics.jsonl and loss.png
(README.md, "Command line").

A run killed at any moment resumes to the same weights and the same metrics.jsonl as a run never stopped:
train_state.pt is saved at step 0 and at every validation, after the files it refers to; every write is atomic
(transformer/safe_files.py); metrics.jsonl is cut back to the size saved with the state (run_log.py); and a
checkpoint is deleted only once the saved state no longer lists it.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from transformer.config import RunConfig
from transformer.model_dir import (
    WEIGHTS_FILE,
    apply_weights,
    average_weights,
    inside,
    load_weights,
    read_config,
    save_weights,
    write_config,
)
from transformer.safe_files import remove_file, remove_stale_temporaries
from transformer.training.checkpoint import load_train_state, save_train_state
from transformer.training.memory import bound_kernel_caches, release_free_memory
from transformer.training.run_log import RunLog
from transformer.training.schedule import learning_rate, make_optimizer, set_learning_rate
from transformer.training.tasks import make_task

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept on disk."""


@dataclass
class Progress:
    """Where training stands; saved in train_state.pt so that --resume continues exactly."""

    step: int = 0
    epoch: int = 0
    next_batch: int = 0  # index of the next micro-batch within the epoch
    train_seconds: float = 0.0
    best_score: float | None = None  # the best valid_<metric> so far (the task's metric)
    best_step: int = 0
    evals_since_best: int = 0  # validations in a row that did not beat the best (train.patience stops on it)
    checkpoints: list[str] = field(default_factory=list)
    snapshots_done: list[float] = field(default_factory=list)
    metrics_bytes: int | None = 0  # the size of metrics.jsonl when this state was saved (None: not recorded)
    finished: bool = False  # the end of the run (checkpoint averaging, loss.png) is done


class Trainer:
    """Train the model of `config.task` on the data of `config.data`, writing everything into `out_dir`."""

    def __init__(self, config: RunConfig, out_dir: str | Path, resume: bool = False, progress_bar: bool = True):
        self.out = Path(out_dir)
        self.resume = resume
        self._check_out_dir(config)
        bound_kernel_caches()  # before the first bf16 matrix product (transformer/training/memory.py)
        train_cfg = config.train
        if train_cfg.threads:
            torch.set_num_threads(train_cfg.threads)
        torch.manual_seed(train_cfg.seed)
        random.seed(train_cfg.seed)
        self.out.mkdir(parents=True, exist_ok=True)
        for directory in (self.out, self.out / "checkpoints", self.out / "snapshots"):
            if directory.is_dir():
                remove_stale_temporaries(directory)  # of writes a killed run left unfinished

        self.task = make_task(config, self.out, resume)  # data and tokenizer
        self.config = self.task.config  # vocabulary and special ids resolved against the tokenizer
        write_config(self.out, self.config)
        self.model = self.task.build_model()
        if train_cfg.init_from and not resume:
            self._init_from(Path(train_cfg.init_from))
        self.optimizer = make_optimizer(
            self.model, train_cfg.lr, train_cfg.betas, train_cfg.adam_eps, train_cfg.weight_decay
        )
        self.last_lr = 0.0  # the learning rate of the latest update (see _set_learning_rate)
        self.state = Progress()
        self.log = RunLog(self.out, total_steps=train_cfg.max_steps, progress=progress_bar,
                          tensorboard=train_cfg.tensorboard)
        if resume:
            self._load_state()
        self.log.start(self.state.step, self.state.metrics_bytes)
        if not resume:
            self._save_state()  # so that a run killed before its first validation resumes too
        logger.info("model: %s parameters", f"{self.model.num_parameters():,}")

    # --- set-up -----------------------------------------------------------------------------------
    def _check_out_dir(self, config: RunConfig) -> None:
        state = self.out / "train_state.pt"
        if self.resume:
            if not state.is_file():
                raise FileNotFoundError(f"cannot resume: {state} does not exist; drop --resume to start a new run")
            saved = read_config(self.out)
            changed = {k for k, v in vars(config.model).items()
                       if k not in ("src_vocab_size", "tgt_vocab_size", "pad_id", "bos_id", "eos_id", "n_classes",
                                    "labels")  # resolved against the tokenizer and the data
                       and getattr(saved.model, k) != v}
            if changed or saved.data != config.data or saved.task != config.task:
                raise ValueError(
                    f"cannot resume {self.out} with a different task, model or data config (model keys differ: "
                    f"{sorted(changed)}, data differs: {saved.data != config.data}, task: {saved.task} -> "
                    f"{config.task}); use the run's own config.yaml"
                )
        elif state.exists() or (self.out / "model.safetensors").exists():
            raise ValueError(
                f"{self.out} already holds a training run; pass --resume to continue it, or choose another --out"
            )

    def _init_from(self, model_dir: Path) -> None:
        """Start from the weights of another model directory: the keys both models have are copied (their shapes
        must agree); the model's other keys (a new head) keep their fresh initialization. Both lists are logged."""
        missing, unexpected = load_weights(self.model, model_dir / WEIGHTS_FILE, strict=False)
        logger.warning("initialized from %s: %d tensors copied; kept fresh (not in it): %s; not used (only in it): %s",
                       model_dir, len(self.model.state_dict()) - len(missing), missing or "none", unexpected or "none")

    def _load_state(self) -> None:
        """Restore weights, optimizer, RNG and progress. The learning rate is a function of the progress, so
        the "scheduler" entry of a train_state.pt written before that (a LambdaLR's state) is not needed."""
        info = load_train_state(self.out / "train_state.pt", self.optimizer, None, model=self.model)
        self.state = Progress(**_progress_fields(info["extra"]["progress"]))
        max_steps = self.config.train.max_steps
        if self.state.finished and max_steps is not None and max_steps <= self.state.step:
            raise ValueError(
                f"the checkpoint in {self.out} is already at step {self.state.step}, and train.max_steps={max_steps} "
                f"is not beyond it; raise it, e.g. --set train.max_steps={self.state.step + 1000}"
            )
        self.state.finished = False  # a run killed before its end finishes now
        logger.info("resumed at step %d (epoch %d)", self.state.step, self.state.epoch)

    # --- the loop ---------------------------------------------------------------------------------
    def _budget_left(self) -> bool:
        t, s = self.config.train, self.state
        if t.max_steps is not None and s.step >= t.max_steps:
            return False
        if t.patience is not None and s.evals_since_best >= t.patience:
            return False  # early stopping
        if t.max_epochs is not None and s.epoch >= t.max_epochs:
            return False
        return t.max_minutes is None or s.train_seconds < t.max_minutes * 60

    def _budget_used(self) -> float:
        """The share of the training budget spent so far: the largest of the step, minute and epoch shares."""
        t, s = self.config.train, self.state
        shares = [0.0]
        if t.max_steps is not None:
            shares.append(s.step / t.max_steps)
        if t.max_minutes is not None:
            shares.append(s.train_seconds / (t.max_minutes * 60))
        if t.max_epochs is not None:
            shares.append((s.epoch + s.next_batch / max(self.task.n_batches(s.epoch), 1)) / t.max_epochs)
        return max(shares)

    def _micro_batches(self):
        """Yield (index, batches in the epoch, batch) from where training stopped, epoch after epoch."""
        while True:  # the caller advances state.epoch and state.next_batch as it consumes batches
            epoch = self.state.epoch
            n_batches, start = self.task.n_batches(epoch), self.state.next_batch
            for index, batch in enumerate(self.task.batches(epoch, start), start):
                yield index, n_batches, batch

    def train(self) -> Progress:
        t = self.config.train
        self.model.train()
        batches = self._micro_batches()
        window_tokens, window_start = 0, time.perf_counter()
        while self._budget_left():
            started = time.perf_counter()
            group = []
            for _ in range(t.accumulate):
                index, n_batches, batch = next(batches)
                group.append(batch)
                self.state.next_batch = index + 1
                if index + 1 == n_batches:
                    self.state.epoch, self.state.next_batch = self.state.epoch + 1, 0
                    break
            loss = self._update(group)
            self.state.step += 1
            self.state.train_seconds += time.perf_counter() - started
            window_tokens += sum(self.task.batch_tokens(b) for b in group)
            self.log.advance()
            if self.state.step % t.log_every == 0:
                elapsed = time.perf_counter() - window_start
                lr = self.last_lr
                rate = self.task.throughput  # tok_s, or img_s for images
                record = {"step": self.state.step, "epoch": self.state.epoch, "loss": round(loss, 4), "lr": lr,
                          rate: round(window_tokens / elapsed), "minutes": round(self.state.train_seconds / 60, 2)}
                self.log.record(record)
                self.log.show(self.state.step, {"loss": f"{loss:.3f}", "lr": f"{lr:.2e}", rate: record[rate],
                                                "min": f"{record['minutes']:.1f}"})
                window_tokens, window_start = 0, time.perf_counter()
            self._maybe_snapshot()
            if self.state.step % t.eval_every == 0 or not self._budget_left():
                self._evaluate_and_save()
                window_tokens, window_start = 0, time.perf_counter()
        self._finish()
        self.log.close()
        return self.state

    def _set_learning_rate(self) -> None:
        """Write the learning rate of the coming update (number state.step + 1) into every param group."""
        t = self.config.train
        self.last_lr = learning_rate(self.state.step + 1, self._budget_used(), warmup=t.warmup, peak_lr=t.lr,
                                     cooldown=t.cooldown)
        set_learning_rate(self.optimizer, self.last_lr)

    def _update(self, group: list[Any]) -> float:
        """One optimizer update over the micro-batches of `group` (loss normalized by all their tokens)."""
        t = self.config.train
        self._set_learning_rate()
        total_tokens = sum(self.task.loss_tokens(b) for b in group)
        total_loss = 0.0
        for batch in group:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=t.bf16):
                loss_sum = self.task.loss(self.model, batch)
            loss = loss_sum / max(total_tokens, 1)
            if not torch.isfinite(loss):
                self._non_finite(float(loss.detach()))
            loss.backward()
            total_loss += float(loss.detach())
        if t.clip_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total_loss

    def _non_finite(self, value: float) -> None:
        t = self.config.train
        remedies = ["a lower train.lr", "a longer train.warmup",
                    f"a smaller train.clip_norm (now {t.clip_norm})" if t.clip_norm else "train.clip_norm=1.0"]
        if t.bf16:
            remedies.append("train.bf16=false (fp32 throughout)")
        raise NonFiniteLossError(
            f"loss became {value} at step {self.state.step + 1} (learning rate {self.last_lr:.3g}); stopped without "
            f"saving, so the last good checkpoint in {self.out} is intact. Try {', '.join(remedies[:-1])} or "
            f"{remedies[-1]}; then --resume"
        )

    # --- validation and checkpoints ---------------------------------------------------------------
    def _validate(self, figures: Any) -> Any:
        """`figures(model)` of the task, on the model in eval mode (training mode restored after)."""
        self.model.eval()
        try:
            return figures(self.model)
        finally:
            self.model.train()

    def _evaluate_and_save(self) -> None:
        s, metric = self.state, f"valid_{self.task.metric}"
        record: dict = {"step": s.step, "minutes": round(s.train_seconds / 60, 2)}
        ckpt_dir = self.out / "checkpoints"
        ckpt_dir.mkdir(exist_ok=True)
        ckpt = ckpt_dir / f"step-{s.step}.safetensors"
        save_weights(self.model, ckpt)
        s.checkpoints = [*s.checkpoints, str(ckpt.relative_to(self.out))][-max(self.config.train.average_last, 1):]
        if self.task.has_validation:
            record.update(self._validate(self.task.validate))
            better = self.task.better(record[metric], s.best_score)
        else:
            better = True  # without a valid split, the latest weights are the ones to keep
        s.evals_since_best = 0 if better else s.evals_since_best + 1
        if better:
            s.best_score, s.best_step = record.get(metric, s.best_score), s.step
            save_weights(self.model, self.out / "model.safetensors")
        elif self.config.train.patience is not None and s.evals_since_best >= self.config.train.patience:
            record["early_stop"] = True  # train.patience validations without a better valid metric
        record["best_step"] = s.best_step
        self.log.record(record)
        self._save_state()
        self._remove_unlisted_checkpoints()
        release_free_memory()  # validation freed tensors of shapes training does not reuse

    def _save_state(self) -> None:
        """train_state.pt: weights, optimizer, RNG and progress, with the size of metrics.jsonl so far."""
        s = self.state
        s.metrics_bytes = self.log.durable_size()
        save_train_state(self.out / "train_state.pt", optimizer=self.optimizer, scheduler=None,
                         step=s.step, epoch=s.epoch, model=self.model, extra={"progress": vars(s).copy()})

    def _remove_unlisted_checkpoints(self) -> None:
        """Delete the checkpoints the saved state no longer lists (only after it is saved: a run killed before
        that resumes from a state that still lists them)."""
        listed = {inside(self.out, name, "checkpoint") for name in self.state.checkpoints}
        for path in (self.out / "checkpoints").glob("step-*.safetensors"):
            if path.resolve() not in listed:
                remove_file(path)

    def _maybe_snapshot(self) -> None:
        s = self.state
        for minutes in self.config.train.snapshot_minutes:
            if minutes not in s.snapshots_done and s.train_seconds >= minutes * 60:
                (self.out / "snapshots").mkdir(exist_ok=True)
                save_weights(self.model, self.out / "snapshots" / f"minute-{minutes:g}.safetensors")
                s.snapshots_done = [*s.snapshots_done, minutes]
                self.log.record({"step": s.step, "snapshot_minutes": minutes})

    def _finish(self) -> None:
        s, k = self.state, self.config.train.average_last
        if k > 1 and len(s.checkpoints) > 1 and self.task.has_validation:
            trained = {name: p.detach().clone() for name, p in self.model.state_dict().items()}
            apply_weights(self.model, average_weights([inside(self.out, c, "checkpoint") for c in s.checkpoints]))
            score = self._validate(self.task.valid_metric)
            self.log.record({"step": s.step, "averaged": len(s.checkpoints),
                             f"valid_{self.task.metric}_averaged": round(score, 2)})
            if self.task.better(score, s.best_score):
                s.best_score, s.best_step = score, s.step
                save_weights(self.model, self.out / "model.safetensors")
                logger.info("averaged weights of %d checkpoints are best (valid %s %.2f)", len(s.checkpoints),
                            self.task.metric, score)
            self.model.load_state_dict(trained)
        from transformer.viz.curves import plot_loss

        plot_loss(self.log.path, self.out / "loss.png")
        s.finished = True
        self._save_state()


def train(config: RunConfig, out_dir: str | Path, resume: bool = False, progress_bar: bool = True) -> Progress:
    """Train per `config` into `out_dir` (see Trainer); returns the final progress record."""
    return Trainer(config, out_dir, resume=resume, progress_bar=progress_bar).train()


def _progress_fields(saved: dict) -> dict:
    """A saved progress record as Progress's fields: a train_state.pt of a translation run written before the
    loop served every task holds `best_bleu` (-1 for none) where Progress now has `best_score`."""
    saved = dict(saved)
    saved.setdefault("metrics_bytes", None)  # not recorded before: metrics.jsonl is kept as it is
    saved.setdefault("finished", True)  # before this field, a saved state at max_steps was a finished run
    if "best_bleu" in saved:
        bleu = saved.pop("best_bleu")
        saved.setdefault("best_score", None if bleu < 0 else bleu)
    return saved
