"""`clipmerge periodic`: fine-tune N seeds in lockstep and merge them with Model Stock periodically.

Every run follows the fine-tuning recipe with its own seed streams (data order, augmentation, mixup).
At the end of every epoch (or every K optimizer steps) and at the end of training, the N runs'
weights are merged with Model Stock (:func:`clipmerge.merging.model_stock`, one ratio per tensor) and
the merged weights are loaded into every run. The final model is the last merge.

The authors have not released this code; the choices below are ours (METHODS-BRIEF sections 2 and 8),
each a flag:

- ``--anchor pretrained`` (default): w0 stays the zero-shot model for every merge. ``merged`` makes
  each merge the anchor of the next one, as one third-party implementation does.
- optimizer state (AdamW moments and step counts) is kept across merges by default, as that
  implementation does; ``--reset-optimizer`` clears it after each merge. The learning-rate schedule
  is a function of the global step either way.
- a merge also happens after the last step when the period does not divide the total steps, so the
  result is always a merge.
- runs are stepped alternately in one process (memory: N models and N optimizer states); seed k's
  draws do not depend on the other runs, so before the first merge run k is exactly
  ``clipmerge finetune --seed k``.
- Model Stock options are the merge module's defaults (mean pairwise angle for N > 2, negative
  cosines clamped to 0), the same as the post-training ``model_stock`` merge.
"""

from __future__ import annotations

import argparse
import logging

import torch

from clipmerge.checkpoint import load_weights, write_json
from clipmerge.errors import ClipmergeError
from clipmerge.finetune import resume
from clipmerge.finetune.cli import add_training_args, prepare, stop_exit_code
from clipmerge.finetune.outputs import write_result
from clipmerge.finetune.train import SeedRun, Trainer
from clipmerge.merging.model_stock import TensorDiagnostics, model_stock, summarize
from clipmerge.models import load_classifier

log = logging.getLogger(__name__)

METHOD = "model_stock_periodic"
MERGE_HISTORY = "merge_history.json"


def merge_period(value: str) -> str | int:
    """``epoch`` or a positive number of optimizer steps (argparse type)."""
    if value == "epoch":
        return value
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise argparse.ArgumentTypeError(f"expected 'epoch' or a positive number of steps, got {value!r}")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="two or more seeds trained in lockstep")
    parser.add_argument("--merge-every", type=merge_period, default="epoch",
                        help="'epoch' or a number of optimizer steps between merges (default: epoch)")
    parser.add_argument("--anchor", choices=("pretrained", "merged"), default="pretrained",
                        help="w0 of every merge: the initial model (default) or the previous merge")
    parser.add_argument("--reset-optimizer", action="store_true",
                        help="clear AdamW moments after every merge (default: keep them)")
    add_training_args(parser)


def merge_states(
    states: list[dict[str, torch.Tensor]], anchor: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, TensorDiagnostics]]:
    """Model Stock of N state dicts around ``anchor``, tensor by tensor (all on CPU)."""
    merged, diagnostics = {}, {}
    for key, w0 in anchor.items():
        try:
            merged[key], diagnostics[key] = model_stock([state[key] for state in states], w0)
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
                 reset_optimizer):
        super().__init__(runs, state_dir, checkpoint_every, fingerprint)
        self.anchor, self.period = anchor, period
        self.anchor_mode, self.reset_optimizer = anchor_mode, reset_optimizer
        self.merge_history: list[dict] = []

    def after_step(self, done: int) -> None:
        if done % self.period == 0 or done == self.data.total_steps:
            self.merge(done)

    def merge(self, done: int) -> None:
        """Merge the runs' current weights and load the result into every run."""
        states = [{k: v.detach().cpu() for k, v in run.model.state_dict().items()} for run in self.runs]
        merged, diagnostics = merge_states(states, self.anchor)
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

    def load_extra_state(self, checkpoint: resume.Checkpoint) -> None:
        if self.anchor_mode == "merged":
            self.anchor = checkpoint.weights["anchor"]
        self.merge_history = checkpoint.info["merge_history"]

    def history_fields(self, run: SeedRun) -> dict:
        return {"seed": run.seed}


def run(args: argparse.Namespace) -> int:
    if len(args.seeds) < 2 or len(set(args.seeds)) != len(args.seeds):
        raise ClipmergeError(f"--seeds: need at least two distinct seeds, got {args.seeds}")
    with resume.StopSignals() as signals:
        setup = prepare(args)
        period = setup.data.steps_per_epoch if args.merge_every == "epoch" else args.merge_every
        # The workers are shared out: runs take turns, so more would mostly sit idle.
        workers = max(1, args.workers // len(args.seeds)) if args.workers else 0
        runs = [
            SeedRun(f"seed{seed}", seed, load_classifier(args.init), setup.data, setup.device, workers)
            for seed in args.seeds
        ]
        options = {"seeds": args.seeds, "merge_every": args.merge_every, "anchor": args.anchor,
                   "reset_optimizer": args.reset_optimizer}
        fingerprint = {"recipe": setup.recipe.to_json(), **options, "train_size": len(setup.data.dataset)}
        trainer = PeriodicTrainer(
            runs, setup.state_dir, args.checkpoint_every, fingerprint,
            anchor=load_weights(args.init), period=period, anchor_mode=args.anchor,
            reset_optimizer=args.reset_optimizer,
        )
        if not trainer.fit(stop_requested=signals.requested):
            return stop_exit_code(signals)
        write_result(
            runs[0].model, setup.arch, setup.out, setup.history, trainer.history,
            method=METHOD, init=args.init, seed=None, ingredients=[run.name for run in runs],
            hparams={**setup.data.hparams(), **options, "merge_period_steps": period, "device": str(setup.device)},
        )
        write_json(setup.out.with_name(MERGE_HISTORY), trainer.merge_history)
        resume.clear_state(setup.state_dir)
    log.info("periodic Model Stock of %s: %d merges -> %s", args.seeds, len(trainer.merge_history), setup.out)
    return 0
