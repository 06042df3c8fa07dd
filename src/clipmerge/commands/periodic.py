"""`clipmerge periodic`: fine-tune N seeds in lockstep, merging them with Model Stock periodically
(clipmerge.training.periodic, where every choice is documented)."""

from __future__ import annotations

import argparse

from clipmerge.commands.training_args import add_training_args, relaunch_if_asked, setup_from_args
from clipmerge.training import resume
from clipmerge.training.periodic import check_seeds, train_periodic


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


def run(args: argparse.Namespace) -> int:
    check_seeds(args.seeds)
    relaunch_if_asked(args)
    with resume.StopSignals() as signals, setup_from_args(args) as setup:
        if not train_periodic(setup, args.seeds, merge_every=args.merge_every, anchor=args.anchor,
                              reset_optimizer=args.reset_optimizer, checkpoint_every=args.checkpoint_every,
                              workers=args.workers, stop_requested=signals.requested):
            return resume.stop_exit_code(signals)
    return 0
