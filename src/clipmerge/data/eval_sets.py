"""The evaluation-set adapters by name: each turns an on-disk dataset into an :class:`EvalSet`.

The generic ``imagefolder`` adapter serves the demo world: class folders named like the head's classes,
possibly a subset of them (the demo's r/a/objectnet sets, like ImageNet-R/A keep 200 of 1000 classes),
scored by keeping only the subset's logit columns. The ImageNet adapters are in imagenet.py.
"""

from __future__ import annotations

from collections.abc import Callable

from clipmerge.data.eval_set import EvalSet, columns_projection
from clipmerge.data.imagenet import IMAGENET_ADAPTERS
from clipmerge.data.splits import image_folder
from clipmerge.errors import ClipmergeError


def imagefolder(root, transform, classnames: list[str] | None) -> EvalSet:
    """Class folders named after head classes (all of them or a subset)."""
    if classnames is None:
        raise ClipmergeError("the imagefolder adapter needs the head's class names (--classnames)")
    dataset = image_folder(root, transform)
    unknown = [c for c in dataset.classes if c not in classnames]
    if unknown:
        raise ClipmergeError(f"{root}: class folders {unknown[:5]} are not classes of the head")
    columns = [classnames.index(c) for c in dataset.classes]
    return EvalSet(dataset, columns_projection(columns), len(columns))


ADAPTERS: dict[str, Callable[..., EvalSet]] = {"imagefolder": imagefolder, **IMAGENET_ADAPTERS}


def build_eval_set(adapter: str, root, transform, classnames: list[str] | None = None) -> EvalSet:
    if adapter not in ADAPTERS:
        raise ClipmergeError(f"unknown eval-set adapter {adapter!r} (known: {', '.join(sorted(ADAPTERS))})")
    return ADAPTERS[adapter](root, transform, classnames)
