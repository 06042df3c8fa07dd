"""The training loop: seed runs advanced one optimizer step at a time, checkpointed and resumable.

:class:`SeedRun` is one seed's model, optimizer and data stream. :class:`Trainer` steps one or more
runs in lockstep (one for ``clipmerge finetune``, N for periodic Model Stock, which hooks
:meth:`Trainer.after_step`), writes the live history, saves checkpoints every N steps and on a stop
signal, and raises on a non-finite loss. Outputs (model, meta.json, history) are written by the callers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from clipmerge.data.splits import training_set
from clipmerge.errors import ClipmergeError
from clipmerge.models.classifier import ImageClassifier
from clipmerge.models.device import autocast, loader_kwargs
from clipmerge.training import resume
from clipmerge.training.augment import SeededAugmentation, train_transform
from clipmerge.training.distributed import Ranks
from clipmerge.training.mixup import mixup, mixup_loss
from clipmerge.training.recipe import Recipe
from clipmerge.training.sampler import StepBatchSampler
from clipmerge.training.schedule import lr_at, steps_per_epoch, total_steps
from clipmerge.training.streams import MIXUP, derive_seed, seed_global_rng

log = logging.getLogger(__name__)


def make_deterministic(device: torch.device) -> None:
    """Deterministic kernels where torch has them (warning once where it has none).

    On CPU this costs nothing measurable and makes same-seed and resumed runs bit-identical. On CUDA
    cuBLAS needs its workspace setting (set before CUDA starts); a few kernels (e.g. memory-efficient
    attention backward) stay nondeterministic, so CUDA runs are reproducible only up to rounding.
    """
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass(frozen=True)
class TrainData:
    """The training images (PIL, un-augmented), their transform, and the resulting step counts."""

    dataset: Dataset
    transform: Callable
    recipe: Recipe
    steps_per_epoch: int
    total_steps: int

    @classmethod
    def load(cls, train_root, heldout_file, preprocess: dict, recipe: Recipe) -> TrainData:
        """The training folder minus the held-out files, with the train transform for ``preprocess``
        (the initial model's recorded preprocess config)."""
        dataset = training_set(train_root, heldout_file, transform=None)
        return cls(
            dataset,
            train_transform(preprocess, recipe),
            recipe,
            steps_per_epoch(len(dataset), recipe.batch_size),
            total_steps(recipe, len(dataset)),
        )

    def hparams(self) -> dict:
        """The resolved recipe: the flags plus what they imply for this training set."""
        return {
            **self.recipe.to_json(),
            "train_size": len(self.dataset),
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
        }


def build_optimizer(model: torch.nn.Module, recipe: Recipe) -> tuple[torch.optim.AdamW, list[str]]:
    """AdamW over every parameter, and the parameter names in the optimizer's order.

    With ``no_decay_1d`` the 1-D parameters (biases, LayerNorm gains, class embedding) form a second
    group without weight decay; by default, as in wise-ft and model-soups, everything is decayed.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if recipe.no_decay_1d:
        decay = [(n, p) for n, p in named if p.ndim >= 2]
        exempt = [(n, p) for n, p in named if p.ndim < 2]
        groups = [(decay, recipe.weight_decay), (exempt, 0.0)]
    else:
        groups = [(named, recipe.weight_decay)]
    optimizer = torch.optim.AdamW(
        [{"params": [p for _, p in g], "weight_decay": wd} for g, wd in groups],
        lr=recipe.lr,
        betas=(recipe.adam_beta1, recipe.adam_beta2),
        eps=recipe.adam_eps,
    )
    return optimizer, [n for g, _ in groups for n, _ in g]


class NonFiniteLoss(ClipmergeError):
    """The loss or gradient norm of an optimizer step is NaN or infinite."""


def micro_share(recipe: Recipe, ranks: Ranks) -> range:
    """The micro-batches of every step that this rank computes under data-parallel training.

    The recipe's ``accum_steps`` micro-batches of ``batch_size / accum_steps`` images are dealt out in
    contiguous blocks, so a step's samples, its mixup pairs and its gradient (the mean over the whole
    batch) are the same for any number of ranks; only the summation order of the gradient differs.

    Raises:
        ClipmergeError: the ranks cannot share the micro-batches evenly.
    """
    recipe.check_split(ranks.size)
    per_rank = recipe.accum_steps // ranks.size
    return range(ranks.rank * per_rank, (ranks.rank + 1) * per_rank)


class SeedRun:
    """One seed's model, optimizer and data stream.

    Args:
        name: id of the run inside the training state (``seed<K>``).
        seed: seeds the data order, augmentation, mixup and global-RNG streams (see streams.py).
        model: the classifier to train (moved to ``device``).
        data: the shared training data.
        device: where to train.
        workers: DataLoader worker processes for this run.
        data_parallel: the ranks that train this one run together (DDP, each on its share of every
            step); by default this process trains it alone.
    """

    def __init__(self, name: str, seed: int, model: ImageClassifier, data: TrainData, device, workers: int,
                 data_parallel: Ranks | None = None):
        self.name, self.seed, self.data, self.device, self.workers = name, seed, data, device, workers
        self.ranks = data_parallel or Ranks.single()
        self.micros = micro_share(data.recipe, self.ranks)
        self.model = model.to(device).train()
        # DDP averages the ranks' gradients in buckets during backward, each micro-batch but the last
        # under no_sync(); it also broadcasts rank 0's weights at construction.
        self.forward = self.model if not self.ranks.grouped else DistributedDataParallel(
            self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.optimizer, self.param_names = build_optimizer(self.model, data.recipe)
        self._batches = None

    def reset_optimizer(self) -> None:
        """Fresh AdamW moments and step counts (the learning rate follows the global step regardless)."""
        self.optimizer, self.param_names = build_optimizer(self.model, self.data.recipe)

    def start(self, step: int) -> None:
        """Open the data stream at optimizer step ``step``."""
        recipe = self.data.recipe
        sampler = StepBatchSampler(
            len(self.data.dataset), self.seed, recipe.batch_size, recipe.accum_steps, step, self.data.total_steps,
            self.micros,
        )
        loader = DataLoader(
            SeededAugmentation(self.data.dataset, self.data.transform, self.seed),
            batch_sampler=sampler,
            worker_init_fn=resume.ignore_stop_signals,
            # A private generator: DataLoader would otherwise draw its worker base seed from the global RNG.
            generator=torch.Generator(),
            **loader_kwargs(self.device, self.workers),
        )
        self._batches = iter(loader)

    def stop(self) -> None:
        """Close the data stream (shuts down its workers)."""
        self._batches = None

    def train_step(self, step: int) -> dict:
        """Make optimizer update ``step`` (0-based); returns its loss, lr and train top-1.

        Raises:
            NonFiniteLoss: the loss or the gradient norm is NaN/inf (the update is not applied).
        """
        recipe = self.data.recipe
        lr = lr_at(step, recipe.lr, recipe.warmup_steps, self.data.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        seed_global_rng(self.seed, step)
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for micro in self.micros:
            images, labels = next(self._batches)
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            batch = mixup(images, labels, recipe.mixup_alpha, derive_seed(self.seed, MIXUP, step, micro))
            last = micro == self.micros[-1]
            with contextlib.ExitStack() as scope:
                if not last and self.ranks.grouped:
                    scope.enter_context(self.forward.no_sync())
                with autocast(self.device):
                    logits = self.forward(batch.images)
                loss = mixup_loss(logits.float(), batch, recipe.label_smoothing)
                # Micro-batch means weighted by their share of the batch: the gradient of the batch mean
                # (times the number of ranks, which DDP's average divides out again).
                (loss * (len(labels) * self.ranks.size / recipe.batch_size)).backward()
            loss_sum += loss.detach() * len(labels)
            correct += (logits.detach().argmax(dim=1) == labels).sum()
        totals = self.ranks.sum(torch.stack([loss_sum, correct.to(loss_sum.dtype)]))
        mean_loss, correct = float(totals[0]) / recipe.batch_size, int(totals[1])
        if not math.isfinite(mean_loss):
            raise NonFiniteLoss(f"{self.name}: loss is {mean_loss} at step {step + 1}")
        # Without clipping (max norm inf: grads are scaled by exactly 1) the norm still guards the update.
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), recipe.grad_clip or math.inf)
        if not torch.isfinite(norm):
            raise NonFiniteLoss(f"{self.name}: gradient norm is {float(norm)} at step {step + 1}")
        self.optimizer.step()
        return {"loss": mean_loss, "lr": lr, "train_top1": 100.0 * correct / recipe.batch_size}

    def state_names(self) -> tuple[str, str]:
        """This run's weight files in a checkpoint: its model and its optimizer tensors."""
        return f"{self.name}.model", f"{self.name}.optimizer"

    def state(self) -> tuple[dict[str, dict[str, torch.Tensor]], list]:
        """Weight files for a checkpoint (:meth:`state_names`) and the param groups."""
        tensors, groups = resume.optimizer_state(self.optimizer, self.param_names)
        model, optimizer = self.state_names()
        return {model: self.model.state_dict(), optimizer: tensors}, groups

    def load_state(self, weights: dict[str, dict[str, torch.Tensor]], groups: list) -> None:
        model, optimizer = self.state_names()
        self.model.load_state_dict(weights[model])
        resume.load_optimizer_state(self.optimizer, self.param_names, weights[optimizer], groups)


class Trainer:
    """Steps ``runs`` in lockstep from the last checkpoint in ``state_dir`` to the end of training.

    Three layouts, one code path (the collectives of a single process are the identity):

    - one process, one or more runs (``clipmerge finetune``; periodic Model Stock in lockstep);
    - data-parallel: every rank holds the same one run (its :class:`SeedRun` was made with the
      ranks), rank 0 writes checkpoints and history for all;
    - seed-parallel (``seed_ranks``): every rank holds a different run, writes that run's part of each
      checkpoint, and rank 0 completes it and writes the history of all runs.

    Args:
        runs: the seed runs of this process (all sharing one :class:`TrainData`).
        state_dir: where checkpoints and the live history go.
        checkpoint_every: save every this many optimizer steps (0: only on a stop signal).
        fingerprint: what must match for a checkpoint to be resumed (recipe, seeds, data size, ...).
        seed_ranks: the ranks of a seed-parallel job (one run each).
    """

    def __init__(self, runs: list[SeedRun], state_dir, checkpoint_every: int, fingerprint: dict,
                 seed_ranks: Ranks | None = None):
        self.runs, self.state_dir = runs, Path(state_dir)
        self.data, self.device = runs[0].data, runs[0].device
        self.ranks = seed_ranks or runs[0].ranks
        self.seed_parallel = seed_ranks is not None and seed_ranks.grouped
        self.checkpoint_every, self.fingerprint = checkpoint_every, fingerprint
        self.history: list[str] = []
        self.elapsed_before = 0.0  # training seconds of earlier (interrupted) processes
        self._t0 = time.perf_counter()

    # Hooks for subclasses (periodic Model Stock) -------------------------------------------------

    def after_step(self, done: int) -> None:
        """Called after every run has made ``done`` optimizer steps."""

    def extra_state(self) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
        """Extra weight files (written by rank 0) and state.json entries to checkpoint."""
        return {}, {}

    def extra_names(self) -> list[str]:
        """The weight files :meth:`extra_state` may write (each rank reads them back)."""
        return []

    def load_extra_state(self, checkpoint: resume.Checkpoint) -> None:
        """Restore what :meth:`extra_state` saved."""

    def history_fields(self, run: SeedRun) -> dict:
        """Extra (integer) fields of a run's history lines."""
        return {}

    # ---------------------------------------------------------------------------------------------

    def fit(self, stop_requested: Callable[[], bool] = lambda: False) -> bool:
        """Train to the end, or until ``stop_requested()`` after a step on any rank (then checkpoint).

        Returns:
            True if training finished, False if it stopped on request (the state is saved).

        Raises:
            NonFiniteLoss: the message names the step and the last good checkpoint, which is kept.
        """
        start = self._restore()
        total = self.data.total_steps
        live = self._open_live_history()
        bar = tqdm(total=total, initial=start, desc=", ".join(r.name for r in self.runs), mininterval=2,
                   disable=not self.ranks.is_main)
        try:
            for run in self.runs:
                run.start(start)
            for step in range(start, total):
                lines = [self._train_step(run, step, bar) for run in self.runs]
                for line in self._all_lines(lines):
                    self.history.append(line)
                    live.write(line + "\n")
                live.flush()
                bar.update(1)
                done = step + 1
                self.after_step(done)
                # Every rank must stop at the same step, whichever of them was signalled.
                if self.ranks.any(stop_requested(), self.device):
                    self.save(done)
                    return False
                if self.checkpoint_every and done % self.checkpoint_every == 0 and done < total:
                    self.save(done)
            return True
        finally:
            bar.close()
            live.close()
            for run in self.runs:
                run.stop()

    def _train_step(self, run: SeedRun, step: int, bar) -> dict:
        began = time.perf_counter()
        try:
            record = run.train_step(step)
        except NonFiniteLoss as e:
            saved = resume.latest_step(self.state_dir)
            kept = (
                "no checkpoint was saved before it" if saved is None
                else f"the last good checkpoint (step {saved}) is kept in {self.state_dir}"
            )
            raise NonFiniteLoss(f"{e} (epoch {step // self.data.steps_per_epoch}); stopped, {kept}. "
                                "Lower --lr or raise --warmup-steps") from None
        seconds = time.perf_counter() - began
        bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", refresh=False)
        return {
            "step": step + 1,
            **self.history_fields(run),
            "epoch": step // self.data.steps_per_epoch,
            **record,
            "images_per_s": round(self.data.recipe.batch_size / seconds, 2),
            "elapsed_s": round(self.elapsed(), 3),
        }

    def _all_lines(self, records: list[dict]) -> list[str]:
        """This step's history lines of every run, in run order (seed-parallel: gathered from the ranks
        as float64, which holds the records' numbers exactly)."""
        if not self.seed_parallel:
            return [json.dumps(r) for r in records]
        (mine,) = records
        rows = self.ranks.gather(torch.tensor([float(v) for v in mine.values()], dtype=torch.float64,
                                              device=self.device))
        return [json.dumps({k: type(mine[k])(v) for k, v in zip(mine, row.tolist(), strict=True)}) for row in rows]

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self._t0

    def save(self, step: int) -> None:
        """Checkpoint ``step``: each rank writes its runs' files (data-parallel: rank 0 only, the others
        hold the same), then rank 0 completes the checkpoint."""
        own = self.seed_parallel or self.ranks.is_main
        weights, groups = {}, []
        for run in self.runs if own else []:
            run_weights, groups = run.state()
            weights.update(run_weights)
        path = resume.checkpoint_path(self.state_dir, step)
        if self.ranks.is_main:
            resume.start_checkpoint(path)
        self.ranks.barrier()
        resume.write_checkpoint_weights(path, weights)
        self.ranks.barrier()
        if self.ranks.is_main:
            extra_weights, extra_info = self.extra_state()
            resume.write_checkpoint_weights(path, extra_weights)
            # AdamW's param groups are the same for every run (one recipe; lr follows the global step).
            info = {"fingerprint": self.fingerprint, "optimizer_groups": groups, "elapsed_s": self.elapsed(),
                    **extra_info}
            resume.complete_checkpoint(self.state_dir, path, step, info, self.history)
            log.info("saved training state at step %d to %s", step, path)
        self.ranks.barrier()

    def _restore(self) -> int:
        files = [name for run in self.runs for name in run.state_names()] + self.extra_names()
        checkpoint = resume.load_latest_checkpoint(self.state_dir, files)
        if checkpoint is None:
            return 0
        saved = checkpoint.info.get("fingerprint") or {}
        if saved != self.fingerprint:
            differ = sorted(k for k in {**saved, **self.fingerprint} if saved.get(k) != self.fingerprint.get(k))
            raise ClipmergeError(
                f"{self.state_dir}: the saved training state was made with different settings ({', '.join(differ)}); "
                "delete that folder to start over"
            )
        for run in self.runs:
            run.load_state(checkpoint.weights, checkpoint.info["optimizer_groups"])
        self.load_extra_state(checkpoint)
        self.history = checkpoint.history
        self.elapsed_before = checkpoint.info["elapsed_s"]
        self._t0 = time.perf_counter()
        log.info("resumed from %s at step %d of %d", self.state_dir, checkpoint.step, self.data.total_steps)
        return checkpoint.step

    def _open_live_history(self):
        """The history so far, rewritten from the checkpoint, then appended to as steps complete
        (by rank 0 only)."""
        if not self.ranks.is_main:
            return open(os.devnull, "w")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        live = open(self.state_dir / resume.HISTORY_FILE, "w")
        live.writelines(line + "\n" for line in self.history)
        live.flush()
        return live
