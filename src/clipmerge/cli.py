"""`clipmerge <command>`: one subcommand per workflow stage. Argument parsing only, no logic.

Each command lives in its own module exposing ``configure(parser)`` and ``run(args)``; modules are
imported only when their command runs, so ``clipmerge --help`` does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from clipmerge.errors import ClipmergeError

COMMANDS = {
    "make-world": ("clipmerge.world.cli", "generate the embedded demo's synthetic image world"),
    "pretrain": ("clipmerge.pretrain", "pre-train a tiny CLIP contrastively on the demo world"),
    "fetch-pretrained": ("clipmerge.pretrained", "save an open_clip tag or local checkpoint as safetensors"),
    "zeroshot": ("clipmerge.zeroshot", "build the zero-shot classifier from a pre-trained CLIP"),
    "split-heldout": ("clipmerge.data.splits", "write the held-out file list of a training set"),
    "finetune": ("clipmerge.finetune.cli", "fine-tune a classifier with one seed (resumable)"),
    "periodic": ("clipmerge.periodic", "fine-tune seeds in lockstep, merging with Model Stock periodically"),
    "merge": ("clipmerge.merging.cli", "merge checkpoints: model_stock, uniform_soup, wise_ft"),
    "greedy-soup": ("clipmerge.merging.greedy_cli", "greedy soup on the held-out split"),
    "evaluate": ("clipmerge.evaluate", "top-1/top-5 of a classifier on one evaluation set"),
    "log-mlflow": ("clipmerge.tracking", "log one model's results to MLflow (idempotent)"),
    "init-mlflow": ("clipmerge.tracking_init", "create the MLflow store and experiment before parallel writers"),
    "table": ("clipmerge.report", "compile the comparison table from eval JSONs"),
    "plots": ("clipmerge.plots", "plot ID vs shift accuracy, WiSE-FT curve, merge diagnostics"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipmerge", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        # Only the module of the command being run is imported (and configures its arguments).
        if name == chosen:
            importlib.import_module(module).configure(sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except ClipmergeError as e:
        print(f"clipmerge {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
