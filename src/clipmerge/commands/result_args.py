"""The inputs every view of a study reads (`table`, `plots`, `log-mlflow`): its eval JSONs, its
models' meta.json files, the ID set and the shifts, and the saved predictions with the bootstrap
protocol of their confidence intervals."""

from __future__ import annotations

import argparse

from clipmerge.reporting.uncertainty import Bootstrap, Study, read_correct


def add_result_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--evals", nargs="+", required=True, help="every eval/<model>/<eval_set>.json")
    parser.add_argument("--metas", nargs="+", required=True,
                        help="the meta.json of every model (and of every ingredient of one)")
    parser.add_argument("--id", dest="id_set", required=True, help="the in-distribution eval set")
    parser.add_argument("--shifts", nargs="+", required=True, help="the distribution-shift eval sets")


def add_bootstrap_arguments(parser: argparse.ArgumentParser) -> None:
    """``--predictions`` and the bootstrap protocol (config ``uncertainty``; clipmerge.reporting.uncertainty)."""
    defaults = Bootstrap()
    group = parser.add_argument_group("confidence intervals")
    group.add_argument("--predictions", nargs="+", default=[],
                       help="the eval/<model>/<eval_set>.predictions.safetensors beside the eval JSONs")
    group.add_argument("--resamples", type=int, default=defaults.resamples, help="bootstrap resamples per set")
    group.add_argument("--bootstrap-seed", type=int, default=defaults.bootstrap_seed)
    group.add_argument("--level", type=float, default=defaults.level, help="confidence level of the intervals")


def bootstrap_study(args: argparse.Namespace, evals) -> Study | None:
    """The bootstrap of ``--predictions`` (checked against ``evals``), None without predictions."""
    if not args.predictions:
        return None
    protocol = Bootstrap(args.resamples, args.bootstrap_seed, args.level)
    return Study.of(read_correct(args.predictions, evals), args.id_set, args.shifts, protocol)
