"""Periodic Model Stock: fine-tune N seeds in lockstep and merge them with Model Stock periodically.

Every run follows the fine-tuning recipe with its own seed streams (data order, augmentation, mixup).
At the end of every epoch (or every K optimizer steps) and at the end of training, the N runs'
weights are merged with Model Stock (:func:`clipmerge.merging.model_stock`, one ratio per tensor) and
the merged weights are loaded into every run. The final model is the last merge.

The authors have not released this code; the choices below are ours, each a flag:

- ``--anchor pretrained`` (default): w0 stays the zero-shot model for every merge. ``merged`` makes
  each merge the anchor of the next one, as one third-party implementation does.
- optimizer state (AdamW moments and step counts) is kept across merges by default, as that
  implementation does; ``--reset-optimizer`` clears it after each merge. The learning-rate schedule
  is a function of the global step either way.
- a merge also happens after the last step when the period does not divide the total steps, so the
  result is always a merge.
- in one process the runs are stepped alternately (memory: N models and N optimizer states); started
  with one rank per seed (torchrun, srun) each rank trains its own seed and at a merge the ranks
  all-gather the weights one tensor at a time, so no rank holds N models; every rank computes the same
  merge, which on CPU is bit-identical to the one-process result. Seed k's draws do not depend on the
  other runs, so before the first merge run k is exactly ``clipmerge finetune --seed k``.
- the model's meta.json lists no ingredients (it is trained from the zero-shot model, like a
  fine-tune) and records its seeds in ``hparams.seeds``.
- Model Stock options are the merge module's defaults (mean pairwise angle for N > 2, negative
  cosines clamped to 0), the same as the post-training ``model_stock`` merge.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from clipmerge import layout
from clipmerge.errors import ClipmergeError
from clipmerge.files import write_json
from clipmerge.merging.diagnostics import TensorDiagnostics, summarize
from clipmerge.merging.model_stock import model_stock
from clipmerge.models.classifier import load_classifier
from clipmerge.training import resume
from clipmerge.training.outputs import write_result
from clipmerge.training.setup import Setup
from clipmerge.training.trainer import SeedRun, Trainer
from clipmerge.weights.checkpoint import load_weights

log = logging.getLogger(__name__)

METHOD = "model_stock_periodic"


def check_seeds(seeds: list[int]) -> None:
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ClipmergeError(f"--seeds: need at least two distinct seeds, got {seeds}")


def merge_states(
    tensors_of: Callable[[str], list[torch.Tensor]], anchor: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, TensorDiagnostics]]:
    """Model Stock of N models around ``anchor``, tensor by tensor; ``tensors_of(key)`` gives the N
    models' tensor ``key`` (on CPU)."""
    merged, diagnostics = {}, {}
    for key, w0 in anchor.items():
        try:
            merged[key], diagnostics[key] = model_stock(tensors_of(key), w0)
        except ClipmergeError as e:
            raise ClipmergeError(f"tensor {key!r}: {e}") from e
    return merged, diagnostics


class PeriodicTrainer(Trainer):
    """A :class:`Trainer` whose runs are merged with Model Stock every ``period`` steps and at the end.

    Args:
        anchor: the initial model's state dict (w0).
        period: optimizer steps between merges.
        anchor_mode: "pretrained" keeps ``anchor``; "merged" replaces it by each merge.
        reset_optimizer: clear every run's optimizer state after each merge.
        (the other arguments are :class:`Trainer`'s.)
    """

    def __init__(self, runs, state_dir, checkpoint_every, fingerprint, *, anchor, period, anchor_mode,
                 reset_optimizer, seed_ranks=None):
        super().__init__(runs, state_dir, checkpoint_every, fingerprint, seed_ranks)
        self.anchor, self.period = anchor, period
        self.anchor_mode, self.reset_optimizer = anchor_mode, reset_optimizer
        self.merge_history: list[dict] = []

    def after_step(self, done: int) -> None:
        if done % self.period == 0 or done == self.data.total_steps:
            self.merge(done)

    def merge(self, done: int) -> None:
        """Merge the runs' current weights (seed-parallel: every rank's) and load the result into every run."""
        states = [run.model.state_dict() for run in self.runs]
        if self.seed_parallel:
            def tensors_of(key):
                return [t.cpu() for t in self.ranks.gather(states[0][key].detach())]
        else:
            def tensors_of(key):
                return [state[key].detach().cpu() for state in states]
        merged, diagnostics = merge_states(tensors_of, self.anchor)
        for run in self.runs:
            run.model.load_state_dict(merged)
            if self.reset_optimizer:
                run.reset_optimizer()
        if self.anchor_mode == "merged":
            self.anchor = merged
        summary = summarize(diagnostics)
        self.merge_history.append({
            "step": done,
            "epoch": done / self.data.steps_per_epoch,
            "summary": summary,
            "tensors": {k: d.to_json() for k, d in diagnostics.items()},
        })
        log.info("merged %d runs at step %d: t mean %.3f (min %.3f, max %.3f)", len(self.runs), done,
                 summary["t_mean"], summary["t_min"], summary["t_max"])

    def extra_state(self):
        weights = {"anchor": self.anchor} if self.anchor_mode == "merged" else {}
        return weights, {"merge_history": self.merge_history}

    def extra_names(self) -> list[str]:
        return ["anchor"] if self.anchor_mode == "merged" else []

    def load_extra_state(self, checkpoint: resume.Checkpoint) -> None:
        if self.anchor_mode == "merged":
            self.anchor = checkpoint.weights["anchor"]
        self.merge_history = checkpoint.info["merge_history"]

    def history_fields(self, run: SeedRun) -> dict:
        return {"seed": run.seed}


def train_periodic(setup: Setup, seeds: list[int], *, merge_every: str | int, anchor: str, reset_optimizer: bool,
                   checkpoint_every: int, workers: int, stop_requested: Callable[[], bool]) -> bool:
    """Train ``seeds`` (in lockstep, or one per rank) with periodic Model Stock merges and write the final merge.

    Returns:
        True when finished (outputs written, training state cleared), False when stopped with the
        resumable state saved.

    Raises:
        ClipmergeError: started with a number of ranks other than one per seed.
    """
    check_seeds(seeds)
    ranks = setup.ranks
    if ranks.grouped and ranks.size != len(seeds):
        raise ClipmergeError(f"periodic Model Stock trains one seed per rank: {len(seeds)} seeds need "
                             f"{len(seeds)} ranks, not {ranks.size} (or one process, which steps them in turn)")
    period = setup.data.steps_per_epoch if merge_every == "epoch" else merge_every
    if ranks.grouped:
        mine, run_workers = [seeds[ranks.rank]], workers
    else:  # the runs take turns, so more workers would mostly sit idle
        mine, run_workers = seeds, max(1, workers // len(seeds)) if workers else 0
    runs = [SeedRun(f"seed{seed}", seed, load_classifier(setup.init), setup.data, setup.device, run_workers)
            for seed in mine]
    options = {"seeds": seeds, "merge_every": merge_every, "anchor": anchor, "reset_optimizer": reset_optimizer}
    fingerprint = {"recipe": setup.recipe.to_json(), **options, "train_size": len(setup.data.dataset)}
    trainer = PeriodicTrainer(
        runs, setup.state_dir, checkpoint_every, fingerprint,
        anchor=load_weights(setup.init), period=period, anchor_mode=anchor, reset_optimizer=reset_optimizer,
        seed_ranks=ranks,
    )
    if not trainer.fit(stop_requested=stop_requested):
        return False
    if ranks.is_main:
        write_result(runs[0].model, setup, trainer.history, model_id=METHOD, method=METHOD, seed=None,
                     hparams={**setup.data.hparams(), **options, "merge_period_steps": period,
                              "device": str(setup.device), "ranks": ranks.size})
        write_json(setup.out.with_name(layout.MERGE_HISTORY), trainer.merge_history)
        resume.clear_state(setup.state_dir)
        log.info("periodic Model Stock of %s: %d merges on %d rank(s) -> %s", seeds, len(trainer.merge_history),
                 ranks.size, setup.out)
    ranks.barrier()
    return True
