"""Readers of the result files under ``results/<study>/`` shared by tracking, the table and the plots.

Formats are the contracts in docs/DESIGN.md ("Interfaces between modules"). This module never imports
torch: everything downstream of the result files runs in the light tracking environment.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from clipmerge import files
from clipmerge.errors import ClipmergeError
from clipmerge.files import write_json  # noqa: F401 (re-exported for the tracking modules)

META_NAME = "meta.json"
HISTORY_NAME = "history.jsonl"
EVAL_KEYS = ("model", "eval_set", "top1", "top5", "n")
# Table/plot row order; fine-tune seeds and WiSE-FT alphas are sorted numerically within their group.
MODEL_ORDER = ("zeroshot", "finetune", "uniform_soup", "greedy_soup", "model_stock", "model_stock_periodic",
               "wise_ft")
_FINETUNE_RE = re.compile(r"finetune_seed(\d+)")
_WISE_RE = re.compile(r"wise_ft_a(.+)")


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON object (every result file is one); anything else raises an error naming the file."""
    obj = files.read_json(path)
    if not isinstance(obj, dict):
        raise ClipmergeError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


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
    """Wall-clock hours of a training history from its ``elapsed_s`` column.

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


def wise_alpha(model: str) -> float | None:
    """The interpolation weight encoded in a WiSE-FT model id (``wise_ft_a0.5`` -> 0.5), else None."""
    m = _WISE_RE.fullmatch(model)
    if not m:
        return None
    try:
        return float(m.group(1))
    except ValueError as e:
        raise ClipmergeError(f"model id {model!r}: cannot read alpha from {m.group(1)!r}") from e


def model_sort_key(model: str) -> tuple:
    """Sort key giving the canonical row order: zeroshot, fine-tunes by seed, merges, WiSE-FT by alpha."""
    if m := _FINETUNE_RE.fullmatch(model):
        return (MODEL_ORDER.index("finetune"), int(m.group(1)), model)
    if (alpha := wise_alpha(model)) is not None:
        return (MODEL_ORDER.index("wise_ft"), alpha, model)
    if model in MODEL_ORDER:
        return (MODEL_ORDER.index(model), 0, model)
    return (len(MODEL_ORDER), 0, model)  # unknown ids last, alphabetically


@dataclass(frozen=True)
class EvalResult:
    """One eval JSON: a model's accuracy (percent) on one evaluation set."""

    model: str
    eval_set: str
    top1: float
    top5: float
    n: int
    path: Path


def read_eval(path: str | os.PathLike) -> EvalResult:
    """Read and check one ``eval/<model>/<eval_set>.json``; its content must match its path."""
    path = Path(path)
    obj = read_json(path)
    missing = [k for k in EVAL_KEYS if k not in obj]
    if missing:
        raise ClipmergeError(f"{path}: missing key(s) {', '.join(missing)}")
    if (path.parent.name, path.stem) != (obj["model"], obj["eval_set"]):
        raise ClipmergeError(
            f"{path}: holds model={obj['model']!r} eval_set={obj['eval_set']!r}, which does not match its "
            "path eval/<model>/<eval_set>.json"
        )
    return EvalResult(obj["model"], obj["eval_set"], float(obj["top1"]), float(obj["top5"]), int(obj["n"]), path)


def read_evals(paths: Iterable[str | os.PathLike]) -> dict[str, dict[str, EvalResult]]:
    """Read eval JSONs into ``{model: {eval_set: EvalResult}}``; a duplicate (model, eval_set) is an error."""
    out: dict[str, dict[str, EvalResult]] = {}
    for path in paths:
        r = read_eval(path)
        if r.eval_set in out.setdefault(r.model, {}):
            raise ClipmergeError(f"{path}: duplicate of {out[r.model][r.eval_set].path}")
        out[r.model][r.eval_set] = r
    return out


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


def read_meta(models_dir: str | os.PathLike, model: str) -> dict:
    """The meta.json of ``<models_dir>/<model>``, checked to describe that model."""
    path = Path(models_dir) / model / META_NAME
    meta = read_json(path)
    if meta.get("model") != model:
        raise ClipmergeError(f"{path}: 'model' is {meta.get('model')!r}, expected {model!r}")
    return meta


@dataclass(frozen=True)
class TrainingCost:
    """What it took to train a model: fine-tuning runs used and their wall-clock hours."""

    num_finetunes: int
    hours: float
    devices: frozenset[str]


def training_cost(models_dir: str | os.PathLike, model: str) -> TrainingCost:
    """Fine-tunes used by a model and their cost, following meta.json ``ingredients`` down to training runs.

    A model with its own history.jsonl is a training run: it counts as ``len(hparams["seeds"])``
    fine-tunes when it records a list of seeds (periodic Model Stock trains them in lockstep, and its
    history's clock covers all of them), else as one. A model without a history (zero-shot, merges)
    costs the sum over its ingredients; an ingredient reached twice (a WiSE-FT of a soup) counts once.
    """
    trained: dict[str, tuple[int, float, str]] = {}
    _collect_training_runs(Path(models_dir), model, trained, ())
    return TrainingCost(
        num_finetunes=sum(n for n, _, _ in trained.values()),
        hours=sum(h for _, h, _ in trained.values()),
        devices=frozenset(d for _, _, d in trained.values()),
    )


def _collect_training_runs(models_dir: Path, model: str, trained: dict, path: tuple[str, ...]) -> None:
    if model in path:
        raise ClipmergeError(f"{models_dir / model / META_NAME}: ingredients form a cycle {' -> '.join(path)}")
    if model in trained:
        return
    meta = read_meta(models_dir, model)
    history = models_dir / model / HISTORY_NAME
    if history.is_file():
        seeds = meta.get("hparams", {}).get("seeds")
        count = len(seeds) if isinstance(seeds, list) else 1
        device = str(meta.get("hparams", {}).get("device", "unknown"))
        trained[model] = (count, training_hours(read_history(history), str(history)), device)
        return
    if meta.get("method") == "finetune":
        raise ClipmergeError(f"{history}: file not found (a fine-tune must record its training history)")
    for ingredient in meta.get("ingredients", []):
        _collect_training_runs(models_dir, ingredient, trained, (*path, model))


def hours_column(devices: Iterable[str]) -> str:
    """Name of the cost column: ``gpu_hours``/``cpu_hours`` when every training run recorded that device."""
    kinds = {"gpu" if d.startswith("cuda") else "cpu" if d == "cpu" else "unknown" for d in devices}
    if len(kinds) == 1 and "unknown" not in kinds:
        return f"{kinds.pop()}_hours"
    return "compute_hours"


def add_result_arguments(parser) -> None:
    """The inputs every view of a study reads: its eval JSONs, its models folder, the ID set and shifts."""
    parser.add_argument("--evals", nargs="+", required=True, help="every eval/<model>/<eval_set>.json")
    parser.add_argument("--models-dir", required=True, help="results/<study>/models (meta.json, history, diagnostics)")
    parser.add_argument("--id", dest="id_set", required=True, help="the in-distribution eval set")
    parser.add_argument("--shifts", nargs="+", required=True, help="the distribution-shift eval sets")
