"""Task arithmetic (Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023, arXiv:2212.04089):
add the scaled sum of the task vectors to the zero-shot model, tensor by tensor.

With task vectors tau_i = w_i - w0 (w0 = the zero-shot model, the anchor):

    w = w0 + scale * sum_i tau_i

Choices the paper leaves open, made here (see also docs/merging.md):

- Sum, not mean: the paper's form (its lambda multiplies the sum of the task vectors). The mean form
  with lambda = 1, w0 + mean_i tau_i, is exactly the uniform soup; here that is ``scale = 1/N``.
- ``scale`` (the paper's lambda) defaults to 0.3, fusion_bench's default for task arithmetic. The paper
  picks lambda on held-out validation data from a grid in [0, 1]; this workflow does no such search
  (set ``merge.task_arithmetic.scale``). Any finite value is accepted (negative = task negation).
- Every tensor is merged, the zero-shot-initialised head included; non-floating tensors (integer
  buffers) are copied from w0.
- Arithmetic in float32 (float64 stays float64), summed in input order, cast back to the input dtype.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from clipmerge.errors import ClipmergeError
from clipmerge.merging.task_vectors import check_real, finish, flat_anchor, task_vectors


def check_options(scale: float = 0.3) -> None:
    check_real("task_arithmetic", "scale", scale)


def task_arithmetic(tensors: Iterable[torch.Tensor], anchor: torch.Tensor, *, scale: float = 0.3) -> torch.Tensor:
    """w0 + scale * sum_i (w_i - w0) for one tensor.

    Args:
        tensors: the N >= 1 fine-tuned versions of the tensor. Iterated once with a running sum, so a
            lazy iterable that reads each tensor on demand keeps one input alive at a time.
        anchor: the zero-shot tensor w0; same shape and dtype.
        scale: lambda, the task vectors' weight.

    Returns:
        The merged tensor, in the anchor's dtype.
    """
    check_options(scale)
    if not anchor.is_floating_point():
        return anchor.clone()
    w0 = flat_anchor(anchor)
    total, buffer, n = torch.zeros_like(w0), torch.empty_like(w0), 0
    for _, tau in task_vectors(tensors, w0, out=buffer):
        total.add_(tau)
        n += 1
    if n == 0:
        raise ClipmergeError("task_arithmetic needs at least 1 fine-tuned model")
    return finish(total, w0, scale, anchor)


def merge_tensor(tensors: Iterable[torch.Tensor], anchor: torch.Tensor, *, scale: float = 0.3):
    """The streaming driver's calling convention (clipmerge.merging.registry)."""
    return task_arithmetic(tensors, anchor, scale=scale), None
