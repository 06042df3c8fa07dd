"""Confidence intervals of every top-1 cell and paired comparisons between models, from the saved
per-image predictions (clipmerge.evaluation.predictions). Torch-free.

Choices (also in the README's method notes):
- **Intervals: a percentile bootstrap over the images of a set**, ``resamples`` (1000) draws of n
  images with replacement, the ``level`` (95 %) interval between the (1 - level)/2 and (1 + level)/2
  percentiles (numpy's linear method). Chosen over the exact binomial interval because the same
  resamples also give the interval of the shift average (one resample per set, averaged) and of a
  difference between two models.
- **The resamples are the same for every model on a set**: resample b of set s is the b-th draw of n
  image indices from numpy's ``RandomState([seed, sha256(s)[:4]])``, whose stream NumPy keeps frozen
  (NEP 19), so the
  intervals are a function of (predictions, seed, resamples) on any machine, and a model's interval
  is the same whether it is computed alone (its MLflow run) or with the study (the table).
- **Paired comparisons**: each merged model (and the ensemble) against the best individual fine-tune
  (the fine-tune, own or imported, with the best top-1 on the ID set: selecting it on the test set
  favours the baseline, so the comparison is conservative for the merges) and against the uniform
  soup. The difference's interval is the paired bootstrap's (both models on the same resampled
  images); **a difference is significant when that interval excludes 0**. Per set the exact two-sided
  McNemar p-value (binomial test on the images exactly one of the two gets right) is reported too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from clipmerge import layout
from clipmerge.errors import ClipmergeError
from clipmerge.evaluation.predictions import Predictions, check_same_images, read_predictions
from clipmerge.evaluation.records import EvalResult

ID, AVG_SHIFTS = "id", "avg_shifts"  # the table's two summary columns
BEST_FINETUNE, UNIFORM_SOUP = "best_finetune", "uniform_soup"  # the paired comparisons' baselines
# |top-1 from the predictions - the eval JSON's| above this: the files are not of one evaluation
# (the JSON's mean is float32, so they agree to ~1e-5 points).
CONSISTENT = 1e-3


@dataclass(frozen=True)
class Bootstrap:
    """The bootstrap protocol: config ``uncertainty`` (schema defaults)."""

    resamples: int = 1000
    bootstrap_seed: int = 0
    level: float = 0.95

    def __post_init__(self):
        if self.resamples < 1:
            raise ClipmergeError(f"uncertainty.resamples must be >= 1, got {self.resamples}")
        if not 0.0 < self.level < 1.0:
            raise ClipmergeError(f"uncertainty.level must be in (0, 1), got {self.level}")

    def interval(self, replicates: np.ndarray) -> tuple[float, float]:
        """The percentile interval of bootstrap replicates."""
        tail = 100.0 * (1.0 - self.level) / 2.0
        lo, hi = np.percentile(replicates, [tail, 100.0 - tail], method="linear")
        return float(lo), float(hi)


def resample_counts(n: int, eval_set: str, protocol: Bootstrap) -> Iterator[np.ndarray]:
    """How often each of the n images is drawn in each resample of ``eval_set`` (int [n] per resample)."""
    set_key = int.from_bytes(hashlib.sha256(eval_set.encode()).digest()[:4], "little")
    stream = np.random.RandomState([protocol.bootstrap_seed, set_key])  # one per set: seeding costs 0.15 ms
    for _ in range(protocol.resamples):
        yield np.bincount(stream.randint(0, n, size=n), minlength=n)


def replicates(correct: Mapping[str, np.ndarray], eval_set: str, protocol: Bootstrap) -> dict[str, np.ndarray]:
    """Top-1 (percent) of each model on every resample of ``eval_set``: ``{model: float [resamples]}``."""
    models = list(correct)
    matrix = np.stack([correct[m] for m in models]).astype(np.float64)
    n = matrix.shape[1]
    if n == 0:
        raise ClipmergeError(f"eval set {eval_set!r} has no images: no interval")
    out = np.empty((len(models), protocol.resamples))
    for b, counts in enumerate(resample_counts(n, eval_set, protocol)):
        out[:, b] = matrix @ counts
    out *= 100.0 / n
    return dict(zip(models, out, strict=True))


def read_correct(prediction_paths: Sequence[str], evals: Mapping[str, Mapping[str, EvalResult]] | None = None
                 ) -> dict[str, dict[str, np.ndarray]]:
    """``{eval_set: {model: per-image correctness}}`` from predictions files, checked: each file's
    model and set match its path, the models of a set saw the same images in the same order, and
    (with ``evals``) each file's top-1 equals its eval JSON's."""
    firsts: dict[str, Predictions] = {}
    out: dict[str, dict[str, np.ndarray]] = {}
    for path in prediction_paths:
        model, eval_set = layout.parse_predictions(path)
        pred = read_predictions(path)
        if (pred.model, pred.eval_set) != (model, eval_set):
            raise ClipmergeError(f"{path}: holds model={pred.model!r} eval_set={pred.eval_set!r}, which does not "
                                 f"match its path")
        check_same_images(firsts.setdefault(eval_set, pred), pred)
        correct = pred.correct
        if evals is not None:
            result = evals.get(model, {}).get(eval_set)
            if result is None:
                raise ClipmergeError(f"{path}: no eval JSON of {model!r} on {eval_set!r} was given beside it")
            if abs(100.0 * correct.mean() - result.top1) > CONSISTENT:
                raise ClipmergeError(f"{path}: top-1 {100.0 * correct.mean():.4f} differs from {result.path}'s "
                                     f"{result.top1:.4f}; the two files are not of one evaluation (re-run it)")
        if model in out.setdefault(eval_set, {}):
            raise ClipmergeError(f"{path}: a second predictions file of {model!r} on {eval_set!r}")
        out[eval_set][model] = correct
    return out


@dataclass(frozen=True)
class Study:
    """Every model's bootstrap replicates on every set, with the ID set and the shifts."""

    correct: dict[str, dict[str, np.ndarray]]
    reps: dict[str, dict[str, np.ndarray]]
    id_set: str
    shifts: list[str]
    protocol: Bootstrap

    @classmethod
    def of(cls, correct: dict[str, dict[str, np.ndarray]], id_set: str, shifts: list[str],
           protocol: Bootstrap) -> Study:
        missing = [s for s in [id_set, *shifts] if s not in correct]
        if missing:
            raise ClipmergeError(f"no predictions on eval set(s) {missing} (needed for the ID/shift intervals)")
        return cls(correct, {s: replicates(c, s, protocol) for s, c in correct.items()}, id_set, shifts, protocol)

    def column_replicates(self, model: str, column: str) -> np.ndarray:
        """Replicates of a table column: a set, ``id`` or ``avg_shifts`` (the mean of the shifts'
        replicates, resample b of each set together)."""
        if column == ID:
            column = self.id_set
        if column == AVG_SHIFTS:
            return np.mean([self._reps(model, s) for s in self.shifts], axis=0)
        return self._reps(model, column)

    def _reps(self, model: str, eval_set: str) -> np.ndarray:
        try:
            return self.reps[eval_set][model]
        except KeyError:
            raise ClipmergeError(f"no predictions of {model!r} on {eval_set!r}") from None

    def columns(self, model: str) -> list[str]:
        return [s for s in self.reps if model in self.reps[s]] + [ID, AVG_SHIFTS]

    def intervals(self, model: str) -> dict[str, tuple[float, float]]:
        """``{column: (lo, hi)}`` of one model, every set it has predictions on plus id and avg_shifts."""
        return {c: self.protocol.interval(self.column_replicates(model, c)) for c in self.columns(model)}

    def point(self, model: str, column: str) -> float:
        if column in (ID, AVG_SHIFTS):
            sets = [self.id_set] if column == ID else self.shifts
            return float(np.mean([100.0 * self.correct[s][model].mean() for s in sets]))
        return 100.0 * float(self.correct[column][model].mean())


@dataclass(frozen=True)
class Paired:
    """``model`` minus ``baseline`` (top-1 points) on one column, its paired-bootstrap interval, the
    McNemar p-value (single sets only) and whether the interval excludes 0."""

    model: str
    role: str
    baseline: str
    column: str
    diff: float
    lo: float
    hi: float
    p_value: float | None
    significant: bool

    @property
    def direction(self) -> int:
        """+1 significantly better, -1 significantly worse, 0 not significant."""
        return 0 if not self.significant else 1 if self.diff > 0 else -1


def mcnemar_p(better: int, worse: int) -> float:
    """Exact two-sided McNemar p-value: ``better`` images only the model gets right, ``worse`` only the
    baseline; the binomial tail of the smaller count under p = 1/2, doubled (capped at 1)."""
    n, k = better + worse, min(better, worse)
    if n == 0:
        return 1.0
    term, tail = 1, 1  # C(n, 0), running sum of C(n, i) for i <= k, in exact integers
    for i in range(k):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / 2**n)


def baselines(study: Study, top1_id: Mapping[str, float]) -> dict[str, str]:
    """The paired comparisons' baselines present in the study: the best individual fine-tune by ID
    top-1 (the first in table order among equals) and the uniform soup."""
    finetunes = [m for m in sorted(top1_id, key=layout.model_sort_key)
                 if layout.parse_model_id(m).kind in layout.FINETUNE_KINDS]
    out = {}
    if finetunes:
        out[BEST_FINETUNE] = max(finetunes, key=lambda m: top1_id[m])  # max keeps the first of equals
    if UNIFORM_SOUP in top1_id:
        out[UNIFORM_SOUP] = UNIFORM_SOUP
    return out


def compared_models(models: Sequence[str]) -> list[str]:
    """The models the paired comparisons test: every merge and the ensemble."""
    kinds = {*layout.METHOD_NAMES, layout.ENSEMBLE}
    return [m for m in sorted(models, key=layout.model_sort_key) if layout.parse_model_id(m).kind in kinds]


def paired(study: Study, model: str, role: str, baseline: str) -> list[Paired]:
    """``model`` against ``baseline`` on every set both have and on id and avg_shifts."""
    out = []
    for column in study.columns(model):
        if column not in (ID, AVG_SHIFTS) and baseline not in study.reps[column]:
            continue
        deltas = study.column_replicates(model, column) - study.column_replicates(baseline, column)
        lo, hi = study.protocol.interval(deltas)
        p_value = None
        if column not in (ID, AVG_SHIFTS):
            ours, theirs = study.correct[column][model], study.correct[column][baseline]
            p_value = mcnemar_p(int(np.sum(ours & ~theirs)), int(np.sum(~ours & theirs)))
        out.append(Paired(model, role, baseline, column, study.point(model, column) - study.point(baseline, column),
                          lo, hi, p_value, lo > 0 or hi < 0))
    return out


def all_paired(study: Study, top1_id: Mapping[str, float]) -> list[Paired]:
    """Every compared model against each baseline (never against itself)."""
    bases = baselines(study, top1_id)
    return [row for model in compared_models(list(top1_id)) for role, base in bases.items() if base != model
            for row in paired(study, model, role, base)]
