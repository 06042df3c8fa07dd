"""The arguments `finetune` and `periodic` share, and the setup they build from them."""

from __future__ import annotations

import argparse
from dataclasses import fields

from clipmerge.training.recipe import Recipe
from clipmerge.training.setup import Setup, prepare


def add_training_args(parser: argparse.ArgumentParser) -> None:
    """Inputs, outputs, resumption, device, recipe."""
    parser.add_argument("--init", required=True, help="initial classifier (the zero-shot model.safetensors)")
    parser.add_argument("--train-root", required=True, help="training ImageFolder root")
    parser.add_argument("--heldout", required=True, help="held-out file list (excluded from training)")
    parser.add_argument("--out", required=True, help="output model.safetensors (meta.json goes beside it)")
    parser.add_argument("--history", help="per-step history.jsonl (default: beside --out)")
    parser.add_argument("--state-dir", help="resumable training state (default: <out dir>/train_state)")
    parser.add_argument("--checkpoint-every", type=int, default=500,
                        help="optimizer steps between training-state checkpoints; 0 = only on SIGTERM/SIGUSR1")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    add_recipe_args(parser)


def setup_from_args(args: argparse.Namespace) -> Setup:
    return prepare(init=args.init, train_root=args.train_root, heldout=args.heldout, recipe=recipe_from_args(args),
                   device=args.device, out=args.out, history=args.history, state_dir=args.state_dir,
                   checkpoint_every=args.checkpoint_every, workers=args.workers)


def add_recipe_args(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per recipe field (``--batch-size`` for ``batch_size``), defaults from :class:`Recipe`."""
    group = parser.add_argument_group("recipe (hyper-parameters recorded in meta.json)")
    for f in fields(Recipe):
        flag, help_text = "--" + f.name.replace("_", "-"), f.metadata["help"]
        if isinstance(f.default, bool):
            group.add_argument(flag, action="store_true", help=help_text)
        else:
            kind = f.metadata["parse"] or type(f.default)
            group.add_argument(flag, type=kind, default=f.default, help=f"{help_text} (default: {f.default})")


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    return Recipe(**{f.name: getattr(args, f.name) for f in fields(Recipe)})
