"""`clipmerge plots`: the study's PNG figures, and the numbers the geometry plots draw (JSON), from
clipmerge.reporting.plots."""

from __future__ import annotations

import argparse

from clipmerge import layout
from clipmerge.commands.result_args import add_bootstrap_arguments, add_result_arguments, bootstrap_study
from clipmerge.evaluation.records import read_evals
from clipmerge.reporting.plots import PLOTS, write_plots
from clipmerge.reporting.results import check_eval_sets, id_and_shift_accuracy, read_metas


def configure(parser: argparse.ArgumentParser) -> None:
    add_result_arguments(parser)
    add_bootstrap_arguments(parser)
    parser.add_argument("--out-dir", required=True,
                        help="where <plot>.png files (and the geometry plots' <plot>.json) are written")
    parser.add_argument("--plots", nargs="+", choices=PLOTS, default=list(PLOTS),
                        help="which plots to write (default: all)")
    parser.add_argument("--merge-diagnostics", help="Model Stock's merge.json (model_stock_geometry)")
    parser.add_argument("--merge-history",
                        help="periodic Model Stock's merge_history.json (model_stock_periodic_geometry)")
    parser.add_argument("--greedy-diagnostics", help="greedy soup's greedy.json (greedy_soup)")


def run(args: argparse.Namespace) -> None:
    check_eval_sets(args.id_set, args.shifts)
    evals = read_evals(args.evals)
    accuracy = {m: id_and_shift_accuracy(evals[m], args.id_set, args.shifts)
                for m in sorted(evals, key=layout.model_sort_key)}
    study = bootstrap_study(args, evals)
    intervals = None if study is None else {
        m: (bounds["id"], bounds["avg_shifts"]) for m in accuracy if (bounds := study.intervals(m))}
    write_plots(args.plots, accuracy, read_metas(args.metas), args.out_dir, args.id_set,
                merge_diagnostics=args.merge_diagnostics, greedy_diagnostics=args.greedy_diagnostics,
                merge_history=args.merge_history, intervals=intervals)
