"""How long training runs and the learning rate at each optimizer step.

The learning rate is a pure function of the step, so resuming needs no scheduler state. It is
wise-ft's ``cosine_lr`` (src/models/utils.py) exactly: ``step`` counts from 0 and is the update about
to be made; warm-up is ``lr * (step + 1) / warmup``, then ``0.5 * (1 + cos(pi * e / es)) * lr`` with
``e = step - warmup`` and ``es = total - warmup``. The last update therefore uses a small positive lr.
"""

from __future__ import annotations

import math

from clipmerge.errors import ClipmergeError
from clipmerge.training.recipe import Recipe


def steps_per_epoch(train_size: int, batch_size: int) -> int:
    """Optimizer steps in one pass. The last incomplete batch is dropped, so every step sees exactly
    ``batch_size`` images (wise-ft keeps it; at ImageNet scale the difference is < 1 step per epoch)."""
    steps = train_size // batch_size
    if steps == 0:
        raise ClipmergeError(f"the training set has {train_size} images, fewer than one batch of {batch_size}")
    return steps


def total_steps(recipe: Recipe, train_size: int) -> int:
    """``recipe.steps`` if given, else ``epochs`` full passes."""
    return recipe.steps or recipe.epochs * steps_per_epoch(train_size, recipe.batch_size)


def lr_at(step: int, base_lr: float, warmup_steps: int, total: int) -> float:
    """Learning rate of the 0-based optimizer step ``step`` of ``total``: linear warm-up, then cosine."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    # step >= warmup_steps implies total > warmup_steps, so the denominator is at least 1.
    progress = (step - warmup_steps) / (total - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * progress)) * base_lr
