"""`clipmerge finetune`: fine-tune the zero-shot classifier with one seed and one recipe, resumably
(clipmerge.training.finetune)."""

from __future__ import annotations

import argparse

from clipmerge.commands.training_args import add_training_args, relaunch_if_asked, setup_from_args
from clipmerge.training import resume
from clipmerge.training.finetune import finetune, finetune_model_id


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, required=True,
                        help="seeds data order, augmentation and mixup only")
    parser.add_argument("--model-id", help="the fine-tune's model id: finetune_seed<K> (the default, K = --seed) "
                                           "or a sweep variant's finetune_hp<K>")
    add_training_args(parser)


def run(args: argparse.Namespace) -> int:
    model_id = finetune_model_id(args.seed, args.model_id)
    relaunch_if_asked(args)
    # Handlers first: a signal during setup is honoured after the first step instead of killing us,
    # and one during the final writes is ignored (they complete, and the run has succeeded).
    with resume.StopSignals() as signals, setup_from_args(args) as setup:
        if not finetune(setup, args.seed, model_id=model_id, checkpoint_every=args.checkpoint_every,
                        workers=args.workers, stop_requested=signals.requested):
            return resume.stop_exit_code(signals)
    return 0
