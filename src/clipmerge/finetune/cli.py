"""`clipmerge finetune`: fine-tune the zero-shot classifier end to end with one seed, resumably.

The helpers here (shared arguments, setup, running until done or a stop signal) also serve
`clipmerge periodic`.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from clipmerge.device import pick_device
from clipmerge.errors import ClipmergeError
from clipmerge.finetune import resume
from clipmerge.finetune.outputs import write_result
from clipmerge.finetune.recipe import Recipe, add_recipe_args, recipe_from_args
from clipmerge.finetune.train import SeedRun, TrainData, Trainer, make_deterministic
from clipmerge.models import classifier_arch, load_classifier

log = logging.getLogger(__name__)


def add_training_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by `finetune` and `periodic`: inputs, outputs, resumption, device, recipe."""
    parser.add_argument("--init", required=True, help="initial classifier (the zero-shot model.safetensors)")
    parser.add_argument("--train-root", required=True, help="training ImageFolder root")
    parser.add_argument("--heldout", required=True, help="held-out file list (excluded from training)")
    parser.add_argument("--out", required=True, help="output model.safetensors (meta.json goes beside it)")
    parser.add_argument("--history", help="per-step history.jsonl (default: beside --out)")
    parser.add_argument("--state-dir", help="resumable training state (default: <out dir>/train_state)")
    parser.add_argument("--checkpoint-every", type=int, default=1000,
                        help="optimizer steps between training-state checkpoints; 0 = only on SIGTERM/SIGUSR1")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    add_recipe_args(parser)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, required=True,
                        help="seeds data order, augmentation and mixup only (model id finetune_seed<K>)")
    add_training_args(parser)


@dataclass(frozen=True)
class Setup:
    """What both trainers start from: the recipe, the device, the data and the output paths."""

    recipe: Recipe
    device: torch.device
    arch: str
    data: TrainData
    out: Path
    history: Path
    state_dir: Path


def prepare(args: argparse.Namespace) -> Setup:
    """Validate arguments, choose the device, make kernels deterministic and load the training set."""
    if args.checkpoint_every < 0 or args.workers < 0:
        raise ClipmergeError("--checkpoint-every and --workers must be >= 0")
    recipe = recipe_from_args(args)
    device = pick_device(args.device)
    make_deterministic(device)
    arch, _ = classifier_arch(args.init)
    data = TrainData.load(args.train_root, args.heldout, arch, recipe)
    out = Path(args.out)
    log.info("%d training images, %d steps per epoch, %d steps on %s",
             len(data.dataset), data.steps_per_epoch, data.total_steps, device)
    return Setup(
        recipe, device, arch, data, out,
        Path(args.history) if args.history else out.with_name("history.jsonl"),
        Path(args.state_dir) if args.state_dir else out.parent / "train_state",
    )


def stop_exit_code(signals: resume.StopSignals) -> int:
    """Exit code after a signal-triggered save: 128 + signal number, as if the signal had killed us."""
    log.warning("stopped by signal %d with the training state saved; rerun the same command to resume",
                signals.received)
    return 128 + signals.received


def run(args: argparse.Namespace) -> int:
    # Handlers first: a signal during setup is honoured after the first step instead of killing us,
    # and one during the final writes is ignored (they complete, and the run has succeeded).
    with resume.StopSignals() as signals:
        setup = prepare(args)
        name = f"seed{args.seed}"
        seed_run = SeedRun(name, args.seed, load_classifier(args.init), setup.data, setup.device, args.workers)
        fingerprint = {"recipe": setup.recipe.to_json(), "seed": args.seed, "train_size": len(setup.data.dataset)}
        trainer = Trainer([seed_run], setup.state_dir, args.checkpoint_every, fingerprint)
        if not trainer.fit(stop_requested=signals.requested):
            return stop_exit_code(signals)
        write_result(
            seed_run.model, setup.arch, setup.out, setup.history, trainer.history,
            method="finetune", init=args.init, seed=args.seed, ingredients=[],
            hparams={**setup.data.hparams(), "device": str(setup.device)},
        )
        resume.clear_state(setup.state_dir)
    log.info("fine-tuned %s in %.0f s -> %s", name, trainer.elapsed(), setup.out)
    return 0
