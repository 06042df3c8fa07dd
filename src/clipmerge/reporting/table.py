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
    inference_passes,
    read_benchmark,
    stage_of,
    training_cost,
)
from clipmerge.reporting.uncertainty import BEST_FINETUNE, UNIFORM_SOUP, Paired, Study

# Columns next to the eval sets; an eval set with one of these names would be ambiguous.
RESERVED = {"method", "id", "avg_shifts", "num_finetunes", "cpu_hours", "gpu_hours", "compute_hours",
            "inference_passes"}
BEST_PREFIX = "best_"
LO, HI = "_lo", "_hi"  # a column's confidence bounds: <column>_lo, <column>_hi
# The significance marks of a cell: significantly above / below each baseline (paired bootstrap).
MARKS = {BEST_FINETUNE: {1: "↑", -1: "↓"}, UNIFORM_SOUP: {1: "⇑", -1: "⇓"}}


def write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def build_table(evals: dict[str, dict[str, EvalResult]], metas: Mapping[str, dict], jobs: Mapping[str, JobCost],
                id_set: str, shifts: list[str], study: Study | None = None) -> pd.DataFrame:
    """One row per evaluated model, in canonical order.

    Columns: ``method``; top-1 (percent) on the ID set, the shifts, then any other eval set present
    (e.g. a held-out split, blank where a model was not evaluated on it); ``id`` and ``avg_shifts``
    (arithmetic mean over the shifts); ``num_finetunes`` and the cost in hours of the jobs that made the
    model, from ``jobs`` (see :func:`clipmerge.reporting.results.training_cost`); ``inference_passes``
    (forward passes per image: the ensemble's members, 1 for any single network); a boolean
    ``best_<column>`` per accuracy column; with ``study`` (the bootstrap of the saved predictions) each
    accuracy column's confidence bounds ``<column>_lo``, ``<column>_hi``. ``metas``: every model's
    meta.json, ingredients included.
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
            "inference_passes": inference_passes(metas.get(model, {"model": model})),
        }
    table = pd.DataFrame.from_dict(rows, orient="index").rename(columns={"hours": hours_column(devices)})
    table.index.name = "model"
    columns = accuracy_columns(table)
    for column in columns:
        table[BEST_PREFIX + column] = table[column] == table[column].max()
    if study is not None:
        bounds = {model: study.intervals(model) for model in table.index}
        for column in columns:
            for suffix, side in ((LO, 0), (HI, 1)):
                table[column + suffix] = [bounds[m][column][side] if column in bounds[m] else float("nan")
                                          for m in table.index]
    return table


def accuracy_columns(table: pd.DataFrame) -> list[str]:
    """The columns that get a best mark: every eval set, ``id`` and ``avg_shifts``."""
    return list(table.columns[1 : table.columns.get_loc("avg_shifts") + 1])


def cell_marks(paired: Iterable[Paired]) -> dict[tuple[str, str], str]:
    """``{(model, column): marks}``: an arrow per baseline the model differs from significantly."""
    marks: dict[tuple[str, str], str] = {}
    for row in paired:
        if row.direction:
            marks[row.model, row.column] = marks.get((row.model, row.column), "") + MARKS[row.role][row.direction]
    return marks


def formatted(table: pd.DataFrame, bold, marks: Mapping[tuple[str, str], str] | None = None) -> pd.DataFrame:
    """The table without flags and bounds as display strings: 2 decimals, each followed by its
    significance ``marks``, hours to 3 significant digits, inference passes as "N×", best values
    wrapped by ``bold``."""
    hours = table.columns[table.columns.get_loc("num_finetunes") + 1]
    marks = marks or {}
    shown = table.loc[:, "method":"inference_passes"].astype(object)
    for column in accuracy_columns(table):
        shown[column] = ["" if pd.isna(v) else (bold(f"{v:.2f}") if best else f"{v:.2f}") + marks.get((m, column), "")
                         for m, v, best in zip(table.index, table[column], table[BEST_PREFIX + column], strict=True)]
    shown[hours] = [f"{v:.3g}" for v in table[hours]]
    shown["inference_passes"] = [f"{v}×" for v in table["inference_passes"]]
    return shown.astype(str)


def to_markdown(table: pd.DataFrame, marks: Mapping[tuple[str, str], str] | None = None) -> str:
    """Markdown table, best value of each accuracy column in bold, significance marks after values."""
    shown = formatted(table, lambda s: f"**{s}**", marks)
    align = ("left", "left") + ("right",) * (shown.shape[1] - 1)  # index, method, numbers
    return shown.to_markdown(disable_numparse=True, colalign=align)


def legend(level: float) -> str:
    """What the marks of :func:`to_markdown` mean."""
    return (f"**bold**: best in its column. ↑/↓: significantly above/below the best individual fine-tune "
            f"(by ID top-1), ⇑/⇓: the uniform soup — the paired bootstrap's {level:.0%} interval of the "
            f"difference excludes 0 (tables/paired.md). Intervals: tables/intervals.md.")


def to_html(table: pd.DataFrame, marks: Mapping[tuple[str, str], str] | None = None) -> str:
    """HTML table (for the Snakemake report), best value of each accuracy column in bold."""
    shown = formatted(table, lambda s: f"<b>{s}</b>", marks)
    shown = shown.map(lambda s: s if s.startswith("<b>") else html.escape(s))
    shown.index = [html.escape(m) for m in shown.index]
    shown.index.name = "model"
    return shown.to_html(escape=False, classes="comparison", border=0)


def intervals_markdown(table: pd.DataFrame) -> str:
    """Every accuracy cell's confidence interval, ``lo–hi``, one row per model."""
    columns = accuracy_columns(table)
    shown = pd.DataFrame({c: ["" if pd.isna(lo) else f"{lo:.2f}–{hi:.2f}"
                              for lo, hi in zip(table[c + LO], table[c + HI], strict=True)] for c in columns},
                         index=table.index)
    return shown.to_markdown(disable_numparse=True, colalign=("left",) + ("right",) * len(columns))


def paired_table(paired: Iterable[Paired]) -> pd.DataFrame:
    """The paired comparisons, one row per (model, baseline, column)."""
    rows = [{"model": r.model, "vs": r.role, "baseline": r.baseline, "column": r.column, "diff": r.diff,
             "diff_lo": r.lo, "diff_hi": r.hi, "p_mcnemar": r.p_value, "significant": r.significant} for r in paired]
    return pd.DataFrame(rows, columns=["model", "vs", "baseline", "column", "diff", "diff_lo", "diff_hi", "p_mcnemar",
                                       "significant"])


def paired_markdown(paired: pd.DataFrame, column_order: list[str]) -> str:
    """One row per (model, baseline): each column's difference in points, its interval, * if significant."""
    if paired.empty:
        return "(no merged model to compare)"
    cells = {}
    for (model, _, baseline), group in paired.groupby(["model", "vs", "baseline"], sort=False):
        cells[f"{model} − {baseline}"] = {
            r.column: f"{r.diff:+.2f} [{r.diff_lo:+.2f}, {r.diff_hi:+.2f}]{'*' if r.significant else ''}"
            for r in group.itertuples()}
    shown = pd.DataFrame.from_dict(cells, orient="index")
    shown = shown[[c for c in column_order if c in shown.columns]].fillna("")
    shown.index.name = "model − baseline"
    return shown.to_markdown(disable_numparse=True, colalign=("left",) + ("right",) * shown.shape[1])


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
