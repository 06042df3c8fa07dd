"""What the task-vector merges share (task_arithmetic, ties, dare, dare_ties, slerp): task vectors
tau_i = w_i - w0 read one input at a time, the compute dtype, and option checks.

Arithmetic is in float32 (float64 inputs stay float64); the merges cast their result back to the input
dtype. A tensor is flattened for the arithmetic and reshaped at the end.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from numbers import Real

import torch

from clipmerge.errors import ClipmergeError


def compute_dtype(anchor: torch.Tensor) -> torch.dtype:
    """float32, or float64 for float64 tensors."""
    return torch.promote_types(anchor.dtype, torch.float32)


def flat_anchor(anchor: torch.Tensor) -> torch.Tensor:
    """w0 flattened in the compute dtype (a copy only when the dtype changes)."""
    return anchor.reshape(-1).to(compute_dtype(anchor))


def task_vectors(tensors: Iterable[torch.Tensor], w0: torch.Tensor,
                 out: torch.Tensor | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """``(i, tau_i)`` for each input in order: tau_i = w_i - w0, flat, in ``w0``'s dtype.

    Each step reads one input (the streaming driver's column reads it from disk when iterated). With
    ``out`` (w0's shape and dtype), every tau_i is written into that one buffer, so a consumer must be
    done with tau_i (it may modify it in place) before asking for the next.
    """
    for i, w in enumerate(tensors):
        w = w.reshape(-1)
        if w.shape != w0.shape:
            raise ClipmergeError(f"input {i} has {w.numel()} elements, the anchor {w0.numel()}")
        yield i, torch.sub(w, w0, out=out) if out is not None else torch.sub(w, w0)


def finish(delta: torch.Tensor, w0: torch.Tensor, scale: float, anchor: torch.Tensor) -> torch.Tensor:
    """w0 + scale * delta in the anchor's shape and dtype (``delta`` is overwritten)."""
    return delta.mul_(scale).add_(w0).reshape(anchor.shape).to(anchor.dtype)


def check_real(method: str, name: str, value) -> float:
    """``value`` as a float if it is a finite real number (not a bool); otherwise an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ClipmergeError(f"{method}: {name} must be a finite number, got {value!r}")
    return float(value)


def check_unit(method: str, name: str, value, *, low_open: bool = False, high_open: bool = False) -> float:
    """``value`` if it lies in [0, 1] (open at an end as asked); otherwise an error naming ``name``."""
    value = check_real(method, name, value)
    above = value > 0 if low_open else value >= 0
    below = value < 1 if high_open else value <= 1
    if not (above and below):
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise ClipmergeError(f"{method}: {name} must be in {interval}, got {value}")
    return value
