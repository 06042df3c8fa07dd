"""SLERP (spherical linear interpolation; Shoemake, SIGGRAPH 1985), per state-dict tensor, as mergekit
merges two models: interpolate along the great circle between two vectors instead of the chord.

For two flat vectors a, b at angle theta (cos theta = a.b / (|a| |b|)) and t in [0, 1]:

    slerp(a, b; t) = sin((1 - t) theta) / sin(theta) * a + sin(t theta) / sin(theta) * b

By default (``space="task_vectors"``) the two vectors are the task vectors tau_i = w_i - w0 of the two
fine-tunes, around the zero-shot model w0 (the anchor): w = w0 + slerp(tau_1, tau_2; t).
``space="weights"`` slerps the fine-tuned weights themselves, w = slerp(w_1, w_2; t), as mergekit
does; the anchor then only supplies the non-floating tensors (it stays an input either way).

Choices, made here (see also docs/merging.md):

- Exactly two fine-tunes; t = 0 gives the first (as ordered in the inputs), t = 1 the second. ``t``
  default 0.5.
- Why task vectors by default: fine-tunes of one zero-shot model differ from it by a small fraction of
  its norm, so their *weights* are nearly parallel (|cos| above the threshold below on most tensors)
  and slerp of weights is, tensor for tensor, just linear interpolation (the uniform soup at t = 0.5).
  Their task vectors are at a real angle, where slerp differs from lerp: it keeps the norm of the
  interpolant near the ends' norms instead of shrinking it along the chord.
- Fallback to linear interpolation (1 - t) a + t b when |cos theta| > 0.9995 (mergekit's
  DOT_THRESHOLD; sin theta is then too small to divide by) or when either vector's norm is <= 1e-12
  (no direction: a tensor a fine-tune did not move). Anti-parallel vectors also take the fallback.
  The coefficients are computed in float64 from the float32 (float64 for float64 inputs) dot product
  and norms.
- Per-tensor diagnostics in merge.json: ``cos`` and ``angle_deg`` between the two vectors, ``t``, and
  ``guard`` = ``parallel`` or ``zero_delta`` when the fallback was taken (a zero vector is recorded as
  orthogonal, cos 0 and 90 degrees, as Model Stock records it), ``non_float`` for integer buffers,
  which are copied from w0.
- Every tensor is merged, the zero-shot-initialised head included. Arithmetic in float32 (float64 stays
  float64), cast back to the input dtype. Memory: the two vectors and w0 (a few copies of one tensor).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Literal

import torch

from clipmerge.errors import ClipmergeError
from clipmerge.merging.diagnostics import TensorDiagnostics
from clipmerge.merging.task_vectors import check_unit, flat_anchor

Space = Literal["task_vectors", "weights"]
SPACES = ("task_vectors", "weights")
DOT_THRESHOLD = 0.9995  # mergekit's: above it (in |cos|), interpolate linearly
EPS = 1e-12  # a vector whose norm is at most this has no direction


def check_options(t: float = 0.5, space: Space = "task_vectors") -> None:
    check_unit("slerp", "t", t)
    if space not in SPACES:
        raise ClipmergeError(f"slerp: space must be one of {', '.join(SPACES)}, got {space!r}")


def slerp(tensors: Collection[torch.Tensor], anchor: torch.Tensor, *, t: float = 0.5,
          space: Space = "task_vectors") -> tuple[torch.Tensor, TensorDiagnostics]:
    """SLERP of one tensor of two fine-tuned models.

    Args:
        tensors: the two fine-tuned versions of the tensor (t = 0 is the first).
        anchor: the zero-shot tensor w0; same shape and dtype.
        t: the interpolation position, in [0, 1].
        space: "task_vectors" (w0 + slerp of w_i - w0, the default) or "weights" (slerp of the w_i).

    Returns:
        The merged tensor (the anchor's dtype) and its diagnostics.
    """
    check_options(t, space)
    n = len(tensors)
    if n != 2:
        raise ClipmergeError(f"slerp needs exactly 2 fine-tuned models, got {n}")
    if not anchor.is_floating_point():
        return anchor.clone(), TensorDiagnostics(None, None, None, "non_float")
    w0 = flat_anchor(anchor)
    a, b = (w.reshape(-1).to(w0.dtype, copy=True) for w in tensors)
    if space == "task_vectors":
        a.sub_(w0)
        b.sub_(w0)
    norm_a, norm_b = float(torch.linalg.vector_norm(a)), float(torch.linalg.vector_norm(b))
    if not (math.isfinite(norm_a) and math.isfinite(norm_b)):
        raise ClipmergeError("slerp: vector norms are not finite (a NaN/inf input, or values overflowing float32)")
    if norm_a <= EPS or norm_b <= EPS:
        cos, guard = 0.0, "zero_delta"
    else:
        cos = max(-1.0, min(1.0, float(torch.dot(a, b)) / (norm_a * norm_b)))
        guard = "parallel" if abs(cos) > DOT_THRESHOLD else None
    angle = math.acos(cos)
    if guard is None:
        sin_angle = math.sin(angle)
        coef_a, coef_b = math.sin((1.0 - t) * angle) / sin_angle, math.sin(t * angle) / sin_angle
    else:
        coef_a, coef_b = 1.0 - t, t
    merged = a.mul_(coef_a).add_(b, alpha=coef_b)
    if space == "task_vectors":
        merged.add_(w0)
    return merged.reshape(anchor.shape).to(anchor.dtype), TensorDiagnostics(cos, math.degrees(angle), t, guard)


# The streaming driver's calling convention (clipmerge.merging.registry) is slerp's own.
merge_tensor = slerp
