"""The comparison table (rows = models, columns = eval sets) and the per-stage cost table, from the
result files: eval JSONs, meta.json records and Snakemake's benchmark files, never MLflow.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from clipmerge import layout
from clipmerge.errors import ClipmergeError
from clipmerge.evaluation.records import EvalResult
from clipmerge.files import atomic_write
from clipmerge.reporting.results import (
    JobCost,
    check_eval_sets,
    hours_column,
    id_and_shift_accuracy,
    read_benchmark,
    stage_of,
    training_cost,
)

# Columns next to the eval sets; an eval set with one of these names would be ambiguous.
RESERVED = {"method", "id", "avg_shifts", "num_finetunes", "cpu_hours", "gpu_hours", "compute_hours"}
BEST_PREFIX = "best_"


def write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def build_table(evals: dict[str, dict[str, EvalResult]], metas: Mapping[str, dict], jobs: Mapping[str, JobCost],
                id_set: str, shifts: list[str]) -> pd.DataFrame:
    """One row per evaluated model, in canonical order.

    Columns: ``method``; top-1 (percent) on the ID set, the shifts, then any other eval set present
    (e.g. a held-out split, blank where a model was not evaluated on it); ``id`` and ``avg_shifts``
    (arithmetic mean over the shifts); ``num_finetunes`` and the cost in hours of the jobs that made the
    model, from ``jobs`` (see :func:`clipmerge.reporting.results.training_cost`); a boolean
    ``best_<column>`` per accuracy column. ``metas``: every model's meta.json, ingredients included.
    """
    check_eval_sets(id_set, shifts)
    extra_sets = sorted({s for by_set in evals.values() for s in by_set} - {id_set, *shifts})
    eval_sets = [id_set, *shifts, *extra_sets]
    if clash := RESERVED.intersection(eval_sets):
        raise ClipmergeError(f"eval set name(s) {sorted(clash)} clash with the table's own columns")

    rows, devices = {}, set()
    for model in sorted(evals, key=layout.model_sort_key):
        by_set = evals[model]
        id_top1, avg_shifts = id_and_shift_accuracy(by_set, id_set, shifts)
        cost = training_cost(metas, jobs, model)
        devices |= cost.devices
        rows[model] = {
            "method": metas[model].get("method", model) if model in metas else model,
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


def cost_table(benchmarks: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Per-stage cost of the study's jobs from their benchmark files: jobs, wall and CPU seconds
    summed, peak RSS (the largest job's). A stage is a model kind or a rule (results.stage_of)."""
    rows: dict[str, dict] = {}
    for path in benchmarks:
        job = read_benchmark(path)
        row = rows.setdefault(stage_of(path), {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0, "max_rss_mb": 0.0})
        row["jobs"] += 1
        row["wall_s"] += job.wall_s
        row["cpu_s"] += job.cpu_s
        row["max_rss_mb"] = max(row["max_rss_mb"], job.max_rss_mb)
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["jobs", "wall_s", "cpu_s", "max_rss_mb"])
    table.index.name = "stage"
    return table.sort_values("wall_s", ascending=False)


def cost_markdown(table: pd.DataFrame) -> str:
    shown = table.astype(object)
    for column in ("wall_s", "cpu_s", "max_rss_mb"):
        shown[column] = [f"{v:.1f}" for v in table[column]]
    shown["jobs"] = [str(v) for v in table["jobs"]]
    return shown.to_markdown(disable_numparse=True, colalign=("left",) + ("right",) * shown.shape[1])
