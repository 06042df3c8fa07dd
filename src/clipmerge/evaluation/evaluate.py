"""Top-1/top-5 accuracy of a classifier on evaluation sets, decoded per model or read from a cache.

The forward passes are clipmerge.evaluation.predict's (fp32 by default; the head always fp32).

With a cache (clipmerge.data.cache) each set is decoded and preprocessed once for every model: the
exact uint8 pixels the eval transform produces before its Normalize, which is then applied on the
device. The logits are identical to the decode path's (tests/unit/test_eval_cache.py, every adapter).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from clipmerge.data.cache import file_keys, with_cache
from clipmerge.data.eval_set import EvalSet
from clipmerge.data.eval_sets import build_eval_set
from clipmerge.evaluation.predict import predict, ranked_classes, ranking_accuracy
from clipmerge.models.clip import eval_transform, preprocess_cfg
from clipmerge.models.device import loader_kwargs


@dataclass(frozen=True)
class SetSource:
    """Where an evaluation set is read from: its adapter, its root and (optionally) its cache file."""

    adapter: str
    root: str
    cache: str | None = None


def open_eval_set(source: SetSource, transform, classnames: list[str] | None) -> EvalSet:
    return build_eval_set(source.adapter, source.root, transform, classnames)


def build_cache(source: SetSource, transform, classnames: list[str] | None, *, batch_size: int, workers: int) -> int:
    """Write (or keep, if current) the cache of ``source`` under ``transform``; its image count."""
    eval_set = open_eval_set(source, transform, classnames)
    return _cached(source, eval_set, transform, classnames, len, batch_size=batch_size, workers=workers)


def _cached(source: SetSource, eval_set: EvalSet, transform, classnames, use, *, batch_size: int, workers: int):
    """``use(cache)`` on the set's cache, built from its files (and rebuilt if stale or corrupt)."""
    samples = eval_set.dataset.samples
    return with_cache(
        use, source.cache, lambda pre: open_eval_set(source, pre, classnames).dataset,
        sample_ids=file_keys([path for path, _ in samples], source.root),
        labels=[label for _, label in samples], transform=transform, batch_size=batch_size, workers=workers,
    )


def predict_set(model, transform, source: SetSource, classnames: list[str] | None, *, batch_size: int,
                workers: int, device, desc: str = "evaluate", precision: str = "fp32"):
    """The projected logits and labels of ``model`` on one set under ``transform`` (an eval transform
    ending in Normalize), decoded now or read from ``source.cache``, its tower run in ``precision``."""
    return _predict(model, transform, source, open_eval_set(source, transform, classnames), classnames,
                    batch_size=batch_size, workers=workers, device=device, desc=desc, precision=precision)


def _predict(model, transform, source: SetSource, eval_set: EvalSet, classnames, *, batch_size: int, workers: int,
             device, desc: str, precision: str):
    if source.cache is None:
        loader = DataLoader(eval_set.dataset, batch_size=batch_size, **loader_kwargs(device, workers))
        return predict(model, loader, device, eval_set.project, desc=desc, precision=precision)
    return _cached(
        source, eval_set, transform, classnames,
        lambda cache: predict(model, cache.batches(batch_size, device), device, eval_set.project, desc=desc,
                              precision=precision),
        batch_size=batch_size, workers=workers)


@dataclass(frozen=True)
class Evaluation:
    """One model on one set: top-1/top-5 (percent) and what the predictions file records."""

    accuracy: dict[int, float]
    logits: torch.Tensor  # [n, classes], the set's own label space
    labels: torch.Tensor
    top1: torch.Tensor  # the first class of the ranking the accuracy is computed from
    samples: list[str]  # image paths relative to the set's root, in order

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def classes(self) -> int:
        return self.logits.shape[1]


def evaluate_model(model, arch: str, source: SetSource, classnames: list[str] | None, *, batch_size: int,
                   workers: int, device, desc: str = "evaluate", precision: str = "fp32") -> Evaluation:
    """The loaded classifier ``model`` of ``arch`` on one set: its accuracy, each image's logits (ranked
    among the projected logits' width of classes) and prediction."""
    transform = eval_transform(preprocess_cfg(arch, model))
    eval_set = open_eval_set(source, transform, classnames)
    logits, labels = _predict(model, transform, source, eval_set, classnames, batch_size=batch_size,
                              workers=workers, device=device, desc=desc, precision=precision)
    ranking = ranked_classes(logits)
    samples = [Path(path).relative_to(source.root).as_posix() for path, _ in eval_set.dataset.samples]
    return Evaluation(ranking_accuracy(ranking, labels), logits, labels, ranking[:, 0], samples)
