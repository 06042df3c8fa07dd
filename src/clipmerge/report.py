"""`clipmerge table`: the comparison table (rows = models, columns = eval sets) from the result files.

It reads the eval JSONs and meta.json/history.jsonl files, never MLflow: ``results/`` is the source of truth.
"""

from __future__ import annotations

import argparse
import html
import logging
from pathlib import Path

import pandas as pd

from clipmerge.errors import ClipmergeError
from clipmerge.results import (
    EvalResult,
    add_result_arguments,
    check_eval_sets,
    hours_column,
    id_and_shift_accuracy,
    model_sort_key,
    read_evals,
    read_meta,
    training_cost,
)

log = logging.getLogger(__name__)

# Columns next to the eval sets; an eval set with one of these names would be ambiguous.
RESERVED = {"method", "id", "avg_shifts", "num_finetunes", "cpu_hours", "gpu_hours", "compute_hours"}
BEST_PREFIX = "best_"


def configure(parser: argparse.ArgumentParser) -> None:
    add_result_arguments(parser)
    parser.add_argument("--out-csv", required=True, help="numeric table with best_<column> flags")
    parser.add_argument("--out-md", help="markdown table, best values in bold")
    parser.add_argument("--out-html", help="HTML table, best values in bold")


def run(args: argparse.Namespace) -> None:
    table = build_table(read_evals(args.evals), Path(args.models_dir), args.id_set, args.shifts)
    for out in (args.out_csv, args.out_md, args.out_html):
        if out:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out_csv)
    markdown = to_markdown(table)
    if args.out_md:
        Path(args.out_md).write_text(markdown + "\n")
    if args.out_html:
        Path(args.out_html).write_text(to_html(table))
    print(markdown)


def build_table(evals: dict[str, dict[str, EvalResult]], models_dir: Path, id_set: str,
                shifts: list[str]) -> pd.DataFrame:
    """One row per evaluated model, in canonical order.

    Columns: ``method``; top-1 (percent) on the ID set, the shifts, then any other eval set present
    (e.g. a held-out split, blank where a model was not evaluated on it); ``id`` and ``avg_shifts``
    (arithmetic mean over the shifts); ``num_finetunes`` and the fine-tuning cost in hours (see
    :func:`clipmerge.results.training_cost`); a boolean ``best_<column>`` per accuracy column.
    """
    check_eval_sets(id_set, shifts)
    extra_sets = sorted({s for by_set in evals.values() for s in by_set} - {id_set, *shifts})
    eval_sets = [id_set, *shifts, *extra_sets]
    if clash := RESERVED.intersection(eval_sets):
        raise ClipmergeError(f"eval set name(s) {sorted(clash)} clash with the table's own columns")

    rows, devices = {}, set()
    for model in sorted(evals, key=model_sort_key):
        by_set = evals[model]
        id_top1, avg_shifts = id_and_shift_accuracy(by_set, id_set, shifts)
        cost = training_cost(models_dir, model)
        devices |= cost.devices
        rows[model] = {
            "method": read_meta(models_dir, model).get("method", model),
            **{s: by_set[s].top1 if s in by_set else float("nan") for s in eval_sets},
            "id": id_top1, "avg_shifts": avg_shifts,
            "num_finetunes": cost.num_finetunes, "hours": cost.hours,
        }
    table = pd.DataFrame.from_dict(rows, orient="index").rename(columns={"hours": hours_column(devices)})
    table.index.name = "model"
    for column in accuracy_columns(table):
        table[BEST_PREFIX + column] = table[column] == table[column].max()
    return table


def accuracy_columns(table: pd.DataFrame) -> list[str]:
    """The columns that get a best mark: every eval set, ``id`` and ``avg_shifts``."""
    return list(table.columns[1 : table.columns.get_loc("avg_shifts") + 1])


def formatted(table: pd.DataFrame, bold) -> pd.DataFrame:
    """The table without flags as display strings: 2 decimals, hours to 3 significant digits, best values
    wrapped by ``bold``."""
    hours = table.columns[table.columns.get_loc("num_finetunes") + 1]
    shown = table.loc[:, "method":hours].astype(object)
    for column in accuracy_columns(table):
        shown[column] = ["" if pd.isna(v) else bold(f"{v:.2f}") if best else f"{v:.2f}"
                         for v, best in zip(table[column], table[BEST_PREFIX + column], strict=True)]
    shown[hours] = [f"{v:.3g}" for v in table[hours]]
    return shown.astype(str)


def to_markdown(table: pd.DataFrame) -> str:
    """Markdown table, best value of each accuracy column in bold."""
    shown = formatted(table, lambda s: f"**{s}**")
    align = ("left", "left") + ("right",) * (shown.shape[1] - 1)  # index, method, numbers
    return shown.to_markdown(disable_numparse=True, colalign=align)


def to_html(table: pd.DataFrame) -> str:
    """HTML table (for the Snakemake report), best value of each accuracy column in bold."""
    shown = formatted(table, lambda s: f"<b>{s}</b>")
    shown = shown.map(lambda s: s if s.startswith("<b>") else html.escape(s))
    shown.index = [html.escape(m) for m in shown.index]
    shown.index.name = "model"
    return shown.to_html(escape=False, classes="comparison", border=0)
