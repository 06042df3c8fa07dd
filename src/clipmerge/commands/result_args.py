"""The inputs every view of a study reads (`table`, `plots`): its eval JSONs, its models' meta.json
files, the ID set and the shifts."""

from __future__ import annotations

import argparse


def add_result_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--evals", nargs="+", required=True, help="every eval/<model>/<eval_set>.json")
    parser.add_argument("--metas", nargs="+", required=True,
                        help="the meta.json of every model (and of every ingredient of one)")
    parser.add_argument("--id", dest="id_set", required=True, help="the in-distribution eval set")
    parser.add_argument("--shifts", nargs="+", required=True, help="the distribution-shift eval sets")
