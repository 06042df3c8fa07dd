"""`clipmerge table`: the comparison table, its companions (intervals, paired comparisons, each row's
recipe) and the per-stage cost table (clipmerge.reporting.table, clipmerge.reporting.recipes)."""

from __future__ import annotations

import argparse

from clipmerge.commands.result_args import add_bootstrap_arguments, add_result_arguments, bootstrap_study
from clipmerge.errors import ClipmergeError
from clipmerge.evaluation.records import read_evals
from clipmerge.reporting.recipes import recipe_markdown, recipe_table
from clipmerge.reporting.results import model_benchmarks, read_metas
from clipmerge.reporting.table import (
    accuracy_columns,
    build_table,
    cell_marks,
    cost_markdown,
    cost_table,
    intervals_markdown,
    legend,
    paired_markdown,
    paired_table,
    to_html,
    to_markdown,
    write_text,
)
from clipmerge.reporting.uncertainty import all_paired


def configure(parser: argparse.ArgumentParser) -> None:
    add_result_arguments(parser)
    add_bootstrap_arguments(parser)
    parser.add_argument("--benchmarks", nargs="+", required=True,
                        help="Snakemake benchmark TSVs: benchmarks/models/<model>.tsv of every model (the cost "
                             "column), and any other job's (the cost table)")
    parser.add_argument("--out-csv", required=True, help="numeric table with best_<column> flags")
    parser.add_argument("--out-md", help="markdown table, best values in bold")
    parser.add_argument("--out-html", help="HTML table, best values in bold")
    parser.add_argument("--out-costs-csv", help="per-stage cost table (jobs, wall s, CPU s, peak RSS MB)")
    parser.add_argument("--out-costs-md", help="the per-stage cost table as markdown")
    parser.add_argument("--out-intervals-md", help="every cell's confidence interval as markdown (needs --predictions)")
    parser.add_argument("--out-paired-csv", help="paired comparisons of the merges with the best fine-tune and the "
                                                 "uniform soup (needs --predictions)")
    parser.add_argument("--out-paired-md", help="the paired comparisons as markdown")
    parser.add_argument("--out-recipes-csv", help="each row's seed, hyper-parameters or ingredients")
    parser.add_argument("--out-recipes-md", help="the recipes as markdown (linked from --out-md)")


def run(args: argparse.Namespace) -> None:
    evals = read_evals(args.evals)
    study = bootstrap_study(args, evals)
    if study is None and (args.out_intervals_md or args.out_paired_csv or args.out_paired_md):
        raise ClipmergeError("--out-intervals-md/--out-paired-*: the intervals need --predictions")
    metas = read_metas(args.metas)
    table = build_table(evals, metas, model_benchmarks(args.benchmarks), args.id_set, args.shifts, study)
    paired = all_paired(study, table["id"].to_dict()) if study is not None else []
    marks = cell_marks(paired)
    markdown = to_markdown(table, marks)
    write_text(args.out_csv, table.to_csv())
    if args.out_md:
        notes = [legend(args.level)] if study is not None else []
        notes += ["Each row's recipe (seed, hyper-parameters) or ingredients: tables/recipes.md."] * bool(
            args.out_recipes_md)
        write_text(args.out_md, "\n\n".join([markdown, *notes]) + "\n")
    if args.out_html:
        write_text(args.out_html, to_html(table, marks))
    if args.out_intervals_md:
        write_text(args.out_intervals_md, intervals_markdown(table) + "\n")
    if args.out_paired_csv or args.out_paired_md:
        pairs = paired_table(paired)
        if args.out_paired_csv:
            write_text(args.out_paired_csv, pairs.to_csv(index=False))
        if args.out_paired_md:
            write_text(args.out_paired_md, paired_markdown(pairs, accuracy_columns(table)) + "\n")
    if args.out_recipes_csv or args.out_recipes_md:
        recipes = recipe_table(metas, table.index)
        if args.out_recipes_csv:
            write_text(args.out_recipes_csv, recipes.to_csv())
        if args.out_recipes_md:
            write_text(args.out_recipes_md, recipe_markdown(recipes) + "\n")
    if args.out_costs_csv or args.out_costs_md:
        costs = cost_table(args.benchmarks)
        if args.out_costs_csv:
            write_text(args.out_costs_csv, costs.to_csv())
        if args.out_costs_md:
            write_text(args.out_costs_md, cost_markdown(costs) + "\n")
    print(markdown)
