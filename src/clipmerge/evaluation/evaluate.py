"""Top-1/top-5 accuracy of a classifier on evaluation sets, decoded per model or read from a cache.

The forward passes are clipmerge.evaluation.predict's (fp32 by default; the head always fp32).

With a cache (clipmerge.data.cache) each set is decoded and preprocessed once for every model: the
exact uint8 pixels the eval transform produces before its Normalize, which is then applied on the
device. The logits are identical to the decode path's (tests/unit/test_eval_cache.py, every adapter).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import DataLoader

from clipmerge.data.cache import file_keys, with_cache
from clipmerge.data.eval_set import EvalSet
from clipmerge.data.eval_sets import build_eval_set
from clipmerge.evaluation.predict import predict, topk_accuracy
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
    eval_set = open_eval_set(source, transform, classnames)
    if source.cache is None:
        loader = DataLoader(eval_set.dataset, batch_size=batch_size, **loader_kwargs(device, workers))
        return predict(model, loader, device, eval_set.project, desc=desc, precision=precision)
    return _cached(
        source, eval_set, transform, classnames,
        lambda cache: predict(model, cache.batches(batch_size, device), device, eval_set.project, desc=desc,
                              precision=precision),
        batch_size=batch_size, workers=workers)


def evaluate_model(model, arch: str, source: SetSource, classnames: list[str] | None, *, batch_size: int,
                   workers: int, device, desc: str = "evaluate", precision: str = "fp32"
                   ) -> tuple[dict[int, float], int, int]:
    """Top-1/top-5 (percent) of the loaded classifier ``model`` of ``arch`` on one set, the images scored
    and the classes each is ranked among (the projected logits' width)."""
    logits, labels = predict_set(model, eval_transform(preprocess_cfg(arch, model)), source, classnames,
                                 batch_size=batch_size, workers=workers, device=device, desc=desc,
                                 precision=precision)
    return topk_accuracy(logits, labels), len(labels), logits.shape[1]
