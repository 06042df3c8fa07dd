"""`clipmerge <command>`: one subcommand per workflow stage. Argument parsing only, no logic.

Command ``x-y`` is the module ``clipmerge.commands.x_y``, exposing ``configure(parser)`` and
``run(args) -> int | None``; it is imported only when that command runs, so ``clipmerge --help``
does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from clipmerge.errors import ClipmergeError

COMMANDS = {
    "make-world": "generate the embedded demo's synthetic image world",
    "pretrain": "pre-train a tiny CLIP contrastively on the demo world",
    "fetch-pretrained": "save an open_clip tag or local checkpoint as safetensors",
    "zeroshot": "build the zero-shot classifier from a pre-trained CLIP",
    "import-model": "convert a fine-tune made elsewhere (model-soups, wise-ft, open_clip) into a classifier",
    "split-heldout": "write the held-out file list of a training set",
    "finetune": "fine-tune a classifier with one seed (resumable)",
    "periodic": "fine-tune seeds in lockstep, merging with Model Stock periodically",
    "merge": "merge checkpoints: model_stock, uniform_soup, wise_ft",
    "greedy-soup": "greedy soup on the held-out split",
    "cache-eval-set": "decode and preprocess an evaluation set once, for every model's evaluation",
    "evaluate": "top-1/top-5 of a classifier on its evaluation sets, one result file per set",
    "ensemble": "the output-space ensemble of fine-tunes, from their saved predictions",
    "init-mlflow": "create the MLflow store and experiment before parallel writers",
    "log-mlflow": "log one model's results to MLflow (idempotent)",
    "table": "compile the comparison table from eval JSONs",
    "plots": "plot ID vs shift accuracy, WiSE-FT curve, merge diagnostics",
}


def command_module(name: str) -> str:
    """The module implementing command ``name``."""
    return f"clipmerge.commands.{name.replace('-', '_')}"


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipmerge", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, help_text in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        # Only the module of the command being run is imported (and configures its arguments).
        if name == chosen:
            importlib.import_module(command_module(name)).configure(sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    args.argv = argv  # the command line as given: a training command re-runs itself under torchrun
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    module = importlib.import_module(command_module(args.command))
    try:
        return int(module.run(args) or 0)
    except ClipmergeError as e:
        print(f"clipmerge {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
