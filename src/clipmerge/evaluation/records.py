"""The eval JSON ``eval/<model>/<eval_set>.json``: ``{"model", "eval_set", "adapter", "top1", "top5", "n",
"classes"}``, accuracies in percent over ``n`` images, each ranked among ``classes`` classes (ImageNet-R/A:
200, ObjectNet: 113). Written by `clipmerge evaluate`, read by the table, the plots and MLflow.
Torch-free."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from clipmerge import layout
from clipmerge.errors import ClipmergeError
from clipmerge.files import read_object, write_json

EVAL_KEYS = ("model", "eval_set", "top1", "top5", "n")


@dataclass(frozen=True)
class EvalResult:
    """One eval JSON: a model's accuracy (percent) on one evaluation set."""

    model: str
    eval_set: str
    top1: float
    top5: float
    n: int
    path: Path
    adapter: str | None = None


def write_eval(path: str | os.PathLike, model: str, eval_set: str, adapter: str, accuracy: dict[int, float],
               n: int, classes: int) -> None:
    """Write the eval JSON of ``model`` on ``eval_set`` (``accuracy``: {1: top-1, 5: top-5})."""
    write_json(path, {"model": model, "eval_set": eval_set, "adapter": adapter, "top1": accuracy[1],
                      "top5": accuracy[5], "n": n, "classes": classes})


def read_eval(path: str | os.PathLike) -> EvalResult:
    """Read and check one ``eval/<model>/<eval_set>.json``; its content must match its path."""
    path = Path(path)
    obj = read_object(path, EVAL_KEYS)
    if layout.parse_eval_result(path) != (obj["model"], obj["eval_set"]):
        raise ClipmergeError(
            f"{path}: holds model={obj['model']!r} eval_set={obj['eval_set']!r}, which does not match its "
            "path eval/<model>/<eval_set>.json"
        )
    return EvalResult(obj["model"], obj["eval_set"], float(obj["top1"]), float(obj["top5"]), int(obj["n"]), path,
                      obj.get("adapter"))


def read_evals(paths: Iterable[str | os.PathLike]) -> dict[str, dict[str, EvalResult]]:
    """Read eval JSONs into ``{model: {eval_set: EvalResult}}``; a duplicate (model, eval_set) is an error."""
    out: dict[str, dict[str, EvalResult]] = {}
    for path in paths:
        r = read_eval(path)
        if r.eval_set in out.setdefault(r.model, {}):
            raise ClipmergeError(f"{path}: duplicate of {out[r.model][r.eval_set].path}")
        out[r.model][r.eval_set] = r
    return out
