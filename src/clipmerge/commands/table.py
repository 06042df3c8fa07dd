"""`clipmerge table`: the comparison table and the per-stage cost table (clipmerge.reporting.table)."""

from __future__ import annotations

import argparse

from clipmerge.commands.result_args import add_result_arguments
from clipmerge.evaluation.records import read_evals
from clipmerge.reporting.results import model_benchmarks, read_metas
from clipmerge.reporting.table import build_table, cost_markdown, cost_table, to_html, to_markdown, write_text


def configure(parser: argparse.ArgumentParser) -> None:
    add_result_arguments(parser)
    parser.add_argument("--benchmarks", nargs="+", required=True,
                        help="Snakemake benchmark TSVs: benchmarks/models/<model>.tsv of every model (the cost "
                             "column), and any other job's (the cost table)")
    parser.add_argument("--out-csv", required=True, help="numeric table with best_<column> flags")
    parser.add_argument("--out-md", help="markdown table, best values in bold")
    parser.add_argument("--out-html", help="HTML table, best values in bold")
    parser.add_argument("--out-costs-csv", help="per-stage cost table (jobs, wall s, CPU s, peak RSS MB)")
    parser.add_argument("--out-costs-md", help="the per-stage cost table as markdown")


def run(args: argparse.Namespace) -> None:
    table = build_table(read_evals(args.evals), read_metas(args.metas), model_benchmarks(args.benchmarks),
                        args.id_set, args.shifts)
    markdown = to_markdown(table)
    write_text(args.out_csv, table.to_csv())
    if args.out_md:
        write_text(args.out_md, markdown + "\n")
    if args.out_html:
        write_text(args.out_html, to_html(table))
    if args.out_costs_csv or args.out_costs_md:
        costs = cost_table(args.benchmarks)
        if args.out_costs_csv:
            write_text(args.out_costs_csv, costs.to_csv())
        if args.out_costs_md:
            write_text(args.out_costs_md, cost_markdown(costs) + "\n")
    print(markdown)
