"""The one training loop, for every task: budget (steps, minutes, epochs), Adam + the section 5.3 learning
rate, bf16, clipping and accumulation, validation cadence, best, averaged and snapshot weights, exact resume,
the progress bar, metrics.jsonl and loss.png. What differs between tasks (data, loss, validation metric) is
the Task's (training/tasks/). It runs on the --device of devices.py, and on the processes torchrun starts
(DDP or FSDP, one update's micro-batches shared among them: distributed.py).

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
import math
import random
import time
from pathlib import Path
from typing import Any

import torch

from transformer.config import RunConfig
from transformer.devices import bf16_supported, move_to, precision, resolve_device
from transformer.model_dir import (
    WEIGHTS_FILE,
    apply_weights,
    average_weights,
    inside,
    load_weights,
    save_weights,
    write_config,
)
from transformer.safe_files import remove_stale_temporaries
from transformer.training import distributed as dist
from transformer.training.checkpoint import (
    load_train_state,
    load_train_weights,
    remove_unlisted_checkpoints,
    save_train_state,
)
from transformer.training.memory import bound_kernel_caches, release_free_memory
from transformer.training.progress import NonFiniteLossError, Progress, check_out_dir, progress_fields
from transformer.training.run_log import RunLog
from transformer.training.schedule import learning_rate, make_optimizer, set_learning_rate
from transformer.training.tasks import make_task

logger = logging.getLogger(__name__)


class Trainer:
    """Train the model of `config.task` on the data of `config.data`, writing everything into `out_dir`."""

    def __init__(self, config: RunConfig, out_dir: str | Path, resume: bool = False, progress_bar: bool = True,
                 device: str = "auto"):
        self.out = Path(out_dir)
        self.resume = resume
        train_cfg = config.train
        self.device = resolve_device(device, dist.local_rank())
        dist.init_from_env(self.device, train_cfg.dist_timeout)  # torchrun's processes (distributed.py)
        self.main, self.world = dist.is_main(), dist.world_size()
        if train_cfg.accumulate % self.world:
            raise ValueError(f"train.accumulate={train_cfg.accumulate} is not a multiple of the {self.world} "
                             f"processes (it counts the micro-batches of an update across all of them); set "
                             f"--set train.accumulate={self.world * max(train_cfg.accumulate // self.world, 1)}")
        if self.world > 1 and config.task == "classify":  # its loss calls model.classify, which DDP does not see
            raise ValueError("task classify does not train on several processes yet; run it without torchrun")
        check_out_dir(self.out, config, resume)
        if self.device.type == "cpu":
            bound_kernel_caches()  # before the first bf16 matrix product (transformer/training/memory.py)
        if train_cfg.threads:
            torch.set_num_threads(train_cfg.threads)
        torch.manual_seed(train_cfg.seed)
        random.seed(train_cfg.seed)
        self.task = self._make_task(config, resume)  # data and tokenizer
        self.config = self.task.config  # vocabulary and special ids resolved against the tokenizer
        self._build_model(resume)
        self.optimizer = make_optimizer(
            self.net.module if self.fsdp else self.model, train_cfg.lr, train_cfg.betas, train_cfg.adam_eps,
            train_cfg.weight_decay,
        )
        self.amp_dtype, scaled = precision(self.device.type, train_cfg.bf16, bf16_supported(self.device))
        self.scaler = torch.amp.GradScaler(self.device.type) if scaled else None
        self.last_lr = 0.0  # the learning rate of the latest update (see _set_learning_rate)
        self.state = Progress()
        self.log = RunLog(self.out, total_steps=train_cfg.max_steps, progress=progress_bar,
                          tensorboard=train_cfg.tensorboard) if self.main else dist.QuietLog()
        if resume:
            self._load_state()
        self.log.start(self.state.step, self.state.metrics_bytes)
        if not resume:
            self._gather()
            if self.main:
                self._save_state()  # so that a run killed before its first validation resumes too
        dist.barrier()
        logger.info("model: %s parameters", f"{self.model.num_parameters():,}")

    # --- set-up -----------------------------------------------------------------------------------
    def _build_model(self, resume: bool) -> None:
        """self.net, what the loss runs through: the model itself, in DDP, or sharded by FSDP (train.parallel);
        self.model, the whole model that validation and the files use (with FSDP: a copy on rank 0 that
        `_gather` fills, the sharded model on the other ranks)."""
        t = self.config.train
        self.fsdp = self.world > 1 and t.parallel == "fsdp"
        self.model = self.task.build_model().to(self.device)
        if t.init_from and not resume:
            self._init_from(Path(t.init_from))
        if resume and self.fsdp:  # the whole weights go in before sharding (the optimizer's after: _load_state)
            apply_weights(self.model, load_train_weights(self.out / "train_state.pt"))
        self.net = dist.wrap(self.model, self.device, t.parallel)
        if self.fsdp and self.main:
            with torch.random.fork_rng(devices=[]):  # the RNG streams stay those of one process
                self.model = self.task.build_model().to(self.device)
        elif self.fsdp:
            self.model = self.net.module
        self._full_optimizer: dict | None = None

    def _gather(self, optimizer: bool = True) -> None:
        """With FSDP: the whole weights into rank 0's self.model, and the optimizer's whole state for
        train_state.pt (every rank takes part). Nothing to do otherwise."""
        if not self.fsdp:
            return
        weights = dist.full_model_state(self.net)
        if optimizer and self.optimizer.state:  # none before the first update: torch would make it by a step
            self._full_optimizer = dist.full_optimizer_state(self.net, self.optimizer)  # at lr 0 (Adam's count +1)
        elif optimizer:
            self._full_optimizer = {"state": {}, "param_groups": []}
        if self.main:
            self.model.load_state_dict(weights)

    def _make_task(self, config: RunConfig, resume: bool):
        """The task, its data and tokenizer: made by rank 0 first (it trains and saves the tokenizer and writes
        config.yaml), then by the other ranks, which load the tokenizer rank 0 saved."""
        dist.barrier()  # every rank has checked the directory before rank 0 writes into it
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            for directory in (self.out, self.out / "checkpoints", self.out / "snapshots"):
                if directory.is_dir():
                    remove_stale_temporaries(directory)  # of writes a killed run left unfinished
            task = make_task(config, self.out, resume)
            write_config(self.out, task.config)
        dist.barrier()
        if not self.main:
            task = make_task(config, self.out, True)
        return task

    def _init_from(self, model_dir: Path) -> None:
        """Start from the weights of another model directory: the keys both models have are copied (their shapes
        must agree); the model's other keys (a new head) keep their fresh initialization. Both lists are logged."""
        missing, unexpected = load_weights(self.model, model_dir / WEIGHTS_FILE, strict=False)
        logger.warning("initialized from %s: %d tensors copied; kept fresh (not in it): %s; not used (only in it): %s",
                       model_dir, len(self.model.state_dict()) - len(missing), missing or "none", unexpected or "none")

    def _load_state(self) -> None:
        """Restore weights, optimizer, RNG and progress. The learning rate is a function of the progress, so
        the "scheduler" entry of a train_state.pt written before that (a LambdaLR's state) is not needed."""
        load_optimizer = (lambda state: dist.load_full_optimizer_state(self.net, self.optimizer, state)) if self.fsdp \
            else None
        info = load_train_state(self.out / "train_state.pt", self.optimizer, None,
                                model=None if self.fsdp else self.model, load_optimizer=load_optimizer)
        self.state = Progress(**progress_fields(info["extra"]["progress"]))
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
            if self.world > 1:  # rank 0's clock decides the minutes budget and snapshots on every rank
                self.state.train_seconds = dist.all_reduce_sum([self.state.train_seconds * self.main], self.device)[0]
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
        """One optimizer update over the micro-batches of `group` (loss normalized by all their tokens). With
        several processes each runs its share (distributed.shard; a rank without one runs the group's first
        micro-batch with weight 0, as DDP needs every rank's backward) and DDP averages the gradients."""
        t = self.config.train
        self._set_learning_rate()
        mine = dist.shard(group)
        total_tokens = sum(self.task.loss_tokens(b) for b in mine)
        if self.world > 1:
            total_tokens = int(dist.all_reduce_sum([total_tokens], self.device)[0])
        weight = self.world if mine else 0  # DDP divides the summed gradients by the world size
        total_loss = 0.0
        for i, batch in enumerate(mine or group[:1]):
            with dist.sync_gradients(self.net, i == max(len(mine), 1) - 1):
                with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16,
                                    enabled=self.amp_dtype is not None):
                    loss_sum = self.task.loss(self.net, batch if self.device.type == "cpu" else
                                              move_to(batch, self.device))
                loss = loss_sum / max(total_tokens, 1)
                if self.world > 1:
                    loss = loss * weight
                elif not torch.isfinite(loss):
                    self._non_finite(float(loss.detach()))
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            total_loss += float(loss.detach()) / self.world
        if self.world > 1:
            total_loss = dist.all_reduce_sum([total_loss], self.device)[0]
            if not math.isfinite(total_loss):  # every rank sees it and stops
                self._non_finite(total_loss)
        self._step(t.clip_norm)
        return total_loss

    def _step(self, clip_norm: float | None) -> None:
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if clip_norm:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)  # skipped when fp16 overflowed; the scale is lowered then
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _non_finite(self, value: float) -> None:
        raise NonFiniteLossError.at(value, self.state.step + 1, self.last_lr, self.config.train, self.out)

    # --- validation and checkpoints ---------------------------------------------------------------
    def _validate(self, figures: Any) -> Any:
        """`figures(model)` of the task, on the model in eval mode (training mode restored after)."""
        self.model.eval()
        try:
            return figures(self.model)
        finally:
            self.model.train()

    def _evaluate_and_save(self) -> None:
        """Validate and save on rank 0; every rank continues with its progress record (best, patience)."""
        self._gather()
        if self.main:
            self._evaluate_and_save_files()
        if self.world > 1:
            self.state = Progress(**dist.broadcast_object(vars(self.state)))

    def _evaluate_and_save_files(self) -> None:
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
        remove_unlisted_checkpoints(self.out, self.state.checkpoints)  # only now that the state is saved
        if self.device.type == "cpu":
            release_free_memory()  # validation freed tensors of shapes training does not reuse

    def _save_state(self) -> None:
        """train_state.pt: weights, optimizer, RNG and progress, with the size of metrics.jsonl so far."""
        s = self.state
        s.metrics_bytes = self.log.durable_size()
        save_train_state(self.out / "train_state.pt", optimizer=self.optimizer, scheduler=None,
                         step=s.step, epoch=s.epoch, model=self.model, extra={"progress": vars(s).copy()},
                         optimizer_state=self._full_optimizer if self.fsdp else None)

    def _maybe_snapshot(self) -> None:
        s = self.state  # train_seconds agree on every rank (train), so every rank sees the same snapshots due
        due = [m for m in self.config.train.snapshot_minutes if m not in s.snapshots_done and s.train_seconds >= m * 60]
        if due:
            self._gather(optimizer=False)
        for minutes in due:
            if self.main:
                (self.out / "snapshots").mkdir(exist_ok=True)
                save_weights(self.model, self.out / "snapshots" / f"minute-{minutes:g}.safetensors")
            s.snapshots_done = [*s.snapshots_done, minutes]
            self.log.record({"step": s.step, "snapshot_minutes": minutes})

    def _finish(self) -> None:
        self._gather()
        if self.main:
            self._finish_files()
        dist.barrier()

    def _finish_files(self) -> None:
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


def train(config: RunConfig, out_dir: str | Path, resume: bool = False, progress_bar: bool = True,
          device: str = "auto") -> Progress:
    """Train per `config` into `out_dir` (see Trainer) on `device` (devices.py), with the processes torchrun
    started if it did (distributed.py); returns the final progress record."""
    try:
        return Trainer(config, out_dir, resume=resume, progress_bar=progress_bar, device=device).train()
    finally:
        dist.teardown()

