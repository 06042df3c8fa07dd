"""Readers of the result files under ``results/<study>/`` shared by tracking, the table and the plots:
meta.json records, training histories, Snakemake's benchmark files and what a model cost.

Formats are the contracts in docs/DESIGN.md ("Interfaces between modules"). This module never imports
torch: everything downstream of the result files runs in the light tracking environment.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from clipmerge import layout
from clipmerge.errors import ClipmergeError
from clipmerge.evaluation.records import EvalResult


def read_metas(paths: Iterable[str | os.PathLike]) -> dict[str, dict]:
    """``{model: meta}`` of the given meta.json files; a model given twice is an error."""
    metas: dict[str, dict] = {}
    for path in paths:
        meta = layout.read_meta(path)
        model = meta.get("model")
        if not isinstance(model, str):
            raise ClipmergeError(f"{path}: 'model' must be a model id, got {model!r}")
        if model in metas:
            raise ClipmergeError(f"{path}: a second meta.json of model {model!r}")
        metas[model] = meta
    return metas


def read_history(path: str | os.PathLike) -> list[dict]:
    """Read a history.jsonl: one JSON object per optimizer step; blank lines are skipped."""
    rows = []
    try:
        with open(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ClipmergeError(f"{path}:{lineno}: not valid JSON ({e})") from e
    except FileNotFoundError as e:
        raise ClipmergeError(f"{path}: file not found") from e
    return rows


def training_hours(history: Iterable[Mapping], source: str = "history") -> float:
    """Wall-clock hours of a training loop from its history's ``elapsed_s`` column.

    A resumed run may restart its clock, so every drop in ``elapsed_s`` starts a new segment and the
    segments' final values are summed.
    """
    total, last = 0.0, 0.0
    for i, row in enumerate(history):
        if "elapsed_s" not in row:
            raise ClipmergeError(f"{source}: row {i + 1} has no 'elapsed_s'")
        elapsed = float(row["elapsed_s"])
        if elapsed < last:
            total += last
        last = elapsed
    return (total + last) / 3600.0


def check_eval_sets(id_set: str, shifts: list[str]) -> None:
    """Reject an empty or overlapping choice of ID set and shifts."""
    if not shifts:
        raise ClipmergeError("--shifts: at least one distribution-shift eval set is needed")
    if id_set in shifts:
        raise ClipmergeError(f"--id {id_set!r} is also listed in --shifts")
    if len(set(shifts)) != len(shifts):
        raise ClipmergeError(f"--shifts lists an eval set twice: {shifts}")


def id_and_shift_accuracy(by_set: Mapping[str, EvalResult], id_set: str, shifts: list[str],
                          metric: str = "top1") -> tuple[float, float]:
    """``(ID accuracy, arithmetic mean over the shifts)`` of one model.

    A missing eval set raises an error naming the file that should exist, next to the model's others.
    """
    for name in [id_set, *shifts]:
        if name not in by_set:
            any_result = next(iter(by_set.values()))
            expected = any_result.path.with_name(f"{name}.json")
            raise ClipmergeError(f"{expected}: no result for model {any_result.model!r} on eval set {name!r} "
                                 "(file missing or not passed with --evals)")
    shift_values = [getattr(by_set[s], metric) for s in shifts]
    return getattr(by_set[id_set], metric), sum(shift_values) / len(shift_values)


# ---------------------------------------------------------------------------------------------
# Costs, from Snakemake's benchmark files

@dataclass(frozen=True)
class JobCost:
    """One job's row of a Snakemake ``benchmark:`` file: wall seconds, peak RSS (MB), CPU seconds."""

    wall_s: float
    max_rss_mb: float
    cpu_s: float


def read_benchmark(path: str | os.PathLike) -> JobCost:
    """A Snakemake benchmark TSV (columns ``s``, ``max_rss``, ``cpu_time``, ...; one row per repeat,
    the first is taken). ``NA`` (a job too short to sample) reads as 0."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except FileNotFoundError as e:
        raise ClipmergeError(f"{path}: file not found") from e
    if not rows or not {"s", "max_rss", "cpu_time"} <= rows[0].keys():
        raise ClipmergeError(f"{path}: not a Snakemake benchmark file (needs columns s, max_rss, cpu_time)")

    def number(key: str) -> float:
        value = rows[0][key]
        try:
            return 0.0 if value in ("NA", "-", "") else float(value)
        except ValueError as e:
            raise ClipmergeError(f"{path}: column {key!r} holds {value!r}, not a number") from e

    return JobCost(number("s"), number("max_rss"), number("cpu_time"))


def model_benchmarks(paths: Iterable[str | os.PathLike]) -> dict[str, JobCost]:
    """``{model: JobCost}`` of those of ``paths`` that are a model's job (layout.model_benchmark)."""
    return {model: read_benchmark(p) for p in paths if (model := layout.benchmarked_model(p)) is not None}


@dataclass(frozen=True)
class TrainingCost:
    """What it took to make a model from the zero-shot model: fine-tuning runs used, and the wall-clock
    hours of every job on the way (training runs and merges, each once)."""

    num_finetunes: int
    hours: float
    devices: frozenset[str]


def training_cost(metas: Mapping[str, dict], jobs: Mapping[str, JobCost], model: str) -> TrainingCost:
    """The cost of ``model``, following meta.json ``ingredients`` down to the training runs.

    A training run (a fine-tune, or periodic Model Stock, which records its lockstep ``seeds``) counts
    as its number of seeds; every model but the zero-shot one (the common starting point) adds its own
    job's wall time from ``jobs``; an ingredient reached twice (a WiSE-FT of a soup) counts once.
    """
    seen: dict[str, tuple[int, float, str | None]] = {}
    _collect(metas, jobs, model, seen, ())
    return TrainingCost(
        num_finetunes=sum(n for n, _, _ in seen.values()),
        hours=sum(h for _, h, _ in seen.values()),
        devices=frozenset(d for _, _, d in seen.values() if d is not None),
    )


def _collect(metas: Mapping[str, dict], jobs: Mapping[str, JobCost], model: str, seen: dict,
             path: tuple[str, ...]) -> None:
    if model in path:
        raise ClipmergeError(f"meta.json of {model!r}: ingredients form a cycle {' -> '.join((*path, model))}")
    if model in seen or model == layout.ZEROSHOT:
        return
    if model not in metas:
        raise ClipmergeError(f"{layout.model_meta(model, '<study>')}: no meta.json given for model {model!r}")
    if model not in jobs:
        raise ClipmergeError(f"{layout.model_benchmark(model, '<study>')}: no benchmark given for model {model!r}")
    meta = metas[model]
    hparams = meta.get("hparams", {})
    seeds = hparams.get("seeds")
    runs = len(seeds) if isinstance(seeds, list) else 1 if meta.get("method") == layout.FINETUNE else 0
    device = str(hparams.get("device", "unknown")) if runs else None
    seen[model] = (runs, jobs[model].wall_s / 3600.0, device)
    if runs:  # a training run starts from the zero-shot model: nothing below it is merged
        return
    for ingredient in meta.get("ingredients", []):
        _collect(metas, jobs, ingredient, seen, (*path, model))


def inference_passes(meta: Mapping) -> int:
    """Forward passes per image at inference: an ensemble runs each of its members, any merged or
    single model is one network."""
    if meta.get("method") == layout.ENSEMBLE:
        return len(meta.get("ingredients", []))
    return 1


def hours_column(devices: Iterable[str]) -> str:
    """Name of the cost column: ``gpu_hours``/``cpu_hours`` when every training run recorded that device."""
    kinds = {"gpu" if d.startswith("cuda") else "cpu" if d == "cpu" else "unknown" for d in devices}
    if len(kinds) == 1 and "unknown" not in kinds:
        return f"{kinds.pop()}_hours"
    return "compute_hours"


def stage_of(benchmark: str | os.PathLike) -> str:
    """The stage a benchmark file belongs to: a model's kind for ``benchmarks/models/<model>.tsv``
    (finetune, model_stock, ...), else the rule (``benchmarks/<rule>[/<job>].tsv``)."""
    if (model := layout.benchmarked_model(benchmark)) is not None:
        return layout.parse_model_id(model).kind
    return layout.benchmarked_rule(benchmark)
