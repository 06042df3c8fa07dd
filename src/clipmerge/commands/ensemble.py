"""`clipmerge ensemble`: the output-space ensemble of fine-tunes on every evaluation set, from their
saved predictions (clipmerge.evaluation.ensemble); writes its eval JSONs, predictions and meta.json."""

from __future__ import annotations

import argparse

from clipmerge import layout
from clipmerge.evaluation.ensemble import build_ensemble


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--members", nargs="+", required=True, metavar="EVAL_JSON",
                        help="each member's eval/<model>/<eval_set>.json on every set (predictions beside them)")
    parser.add_argument("--metas", nargs="+", required=True, help="each member's meta.json")
    parser.add_argument("--out", nargs="+", required=True, metavar="EVAL_JSON",
                        help="the ensemble's eval JSON per set, eval/<model-id>/<eval_set>.json")
    parser.add_argument("--out-meta", required=True, help="the ensemble's meta.json")
    parser.add_argument("--model-id", default=layout.ENSEMBLE)


def run(args: argparse.Namespace) -> None:
    build_ensemble(args.model_id, args.members, args.metas, args.out, args.out_meta)
