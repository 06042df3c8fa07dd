"""The arguments `finetune` and `periodic` share, how they start their ranks, and the setup they
build from them."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import fields

from clipmerge.errors import ClipmergeError
from clipmerge.training import distributed
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
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (per rank)")
    parser.add_argument("--ranks", type=int, default=1,
                        help="start this many ranks on this node with torchrun, one GPU each (default 1: this "
                             "process alone, unless torchrun or a multi-task srun started it as one rank)")
    parser.add_argument("--dist-timeout", type=int, default=distributed.DEFAULT_TIMEOUT_S,
                        help="seconds a rank waits for the others in a collective before failing "
                             f"(default: {distributed.DEFAULT_TIMEOUT_S})")
    add_recipe_args(parser)


def relaunch_if_asked(args: argparse.Namespace) -> None:
    """With ``--ranks N > 1`` and no launcher around this process: become torchrun starting N ranks.

    Raises:
        ClipmergeError: a launcher started a different number of ranks, or the node lacks the GPUs.
    """
    if args.ranks < 1:
        raise ClipmergeError(f"--ranks must be >= 1, got {args.ranks}")
    launch = distributed.launched()
    if launch is not None:
        if args.ranks not in (1, launch.size):
            raise ClipmergeError(f"--ranks {args.ranks}, but the launcher started {launch.size} ranks")
    elif args.ranks > 1:
        distributed.check_gpus_for(args.ranks, args.device)
        distributed.relaunch_with_torchrun(args.ranks, args.argv)


@contextlib.contextmanager
def setup_from_args(args: argparse.Namespace) -> Iterator[Setup]:
    """The training setup, its process group left (if any) when the command is done."""
    setup = prepare(init=args.init, train_root=args.train_root, heldout=args.heldout, recipe=recipe_from_args(args),
                    device=args.device, out=args.out, history=args.history, state_dir=args.state_dir,
                    checkpoint_every=args.checkpoint_every, workers=args.workers, dist_timeout=args.dist_timeout)
    try:
        yield setup
    finally:
        distributed.leave(setup.ranks)


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
