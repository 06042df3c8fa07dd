"""TIES-Merging (Yadav et al., "Resolving Interference When Merging Models", NeurIPS 2023,
arXiv:2306.01708): trim each task vector, elect a sign per element, average the agreeing values.

With task vectors tau_i = w_i - w0 (w0 = the zero-shot model, the anchor), per element p:

    trim:     keep the top ``density`` fraction of |tau_i| (within the tensor), zero the rest -> t_i
    elect:    gamma_p = sign(sum_i t_i[p])         (the sign of the larger total mass)
    merge:    A_p = {i : t_i[p] != 0 and sign(t_i[p]) = gamma_p}
              tau_p = mean_{i in A_p} t_i[p]       (0 when A_p is empty)
    w = w0 + scale * tau

Choices the paper leaves open, made here (see also docs/merging.md):

- Trimming is per state-dict tensor: each tensor of each task vector keeps its own top ``density``
  fraction, as mergekit does. The paper ranks the whole flattened task vector at once; per tensor, a
  tensor whose fine-tune barely moved still keeps its largest changes, and the merge streams.
- How many: k = ceil(density * numel) elements (at least one), then every element whose magnitude is
  >= the k-th largest magnitude is kept. So *ties at the threshold are all kept* (more than k survive
  only when magnitudes are exactly equal there, e.g. a tensor with fewer than k nonzero changes keeps
  them all). This is the reference code's rule (``|tau| >= kthvalue``, as in the TIES code DARE's
  MergeLM carries, whose index keeps one element more than its count), and unlike an exact top-k
  (mergekit's ``int(density * numel)`` by argsort) it does not depend on how a sort orders equal values.
- A zero election (the trimmed values sum to exactly 0, e.g. every t_i[p] is 0): A_p holds no nonzero
  value, so the element keeps w0, which is what the paper's formula gives. The reference code (as in
  MergeLM) replaces a zero sign by the majority sign of the whole vector, mergekit by +1; the three
  differ only at exact cancellations of nonzero values.
- ``density`` default 0.2 (the paper's top-20%), ``scale`` (the paper's lambda) default 1.0 (the paper's
  choice when no validation set is used: the disjoint mean is already on the scale of one task vector).
- Every tensor is merged, the zero-shot-initialised head included; non-floating tensors (integer
  buffers) are copied from w0. Arithmetic in float32 (float64 stays float64), cast back to the input
  dtype.
- One pass over the inputs, though the election needs every input before any value can be averaged:
  the elected sign is that of (sum of the positive trimmed values) + (sum of the negative ones), so
  accumulating those two sums and the two counts gives the election and both candidate means at once.
  Memory: a few copies of one tensor (w0, the four sums, one task vector and its magnitudes), never N.
- The k-th largest magnitude comes from numpy's partition (introselect) on a copy of the magnitudes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch

from clipmerge.errors import ClipmergeError
from clipmerge.merging.task_vectors import check_real, check_unit, finish, flat_anchor, task_vectors

# A sparsifier: (input index, its flat task vector) -> the vector with the dropped elements zeroed (it may
# work in place).
Sparsify = Callable[[int, torch.Tensor], torch.Tensor]


def check_options(density: float = 0.2, scale: float = 1.0) -> None:
    check_unit("ties", "density", density, low_open=True)
    check_real("ties", "scale", scale)


def kept_count(numel: int, density: float) -> int:
    """k = ceil(density * numel), at least 1 (a product within rounding of an integer counts as it)."""
    return min(numel, max(1, math.ceil(density * numel * (1 - 1e-12))))


def trim(tau: torch.Tensor, density: float) -> torch.Tensor:
    """TIES' trim, in place: zero every element of ``tau`` (flat) whose magnitude is below the k-th
    largest magnitude (k = kept_count), so ties at that threshold are all kept."""
    numel = tau.numel()
    if density >= 1 or numel == 0:
        return tau
    magnitudes = tau.abs()
    # numpy's introselect: a copy of the magnitudes, 2x faster than torch.kthvalue (which also allocates
    # int64 indices, 2 more copies); the k-th largest is the (numel - k)-th smallest, counting from 0.
    smallest_kept = numel - kept_count(numel, density)
    threshold = float(np.partition(magnitudes.numpy(), smallest_kept)[smallest_kept])
    return tau.masked_fill_(magnitudes < threshold, 0)


def disjoint_merge(tensors: Iterable[torch.Tensor], w0: torch.Tensor, sparsify: Sparsify,
                   method: str = "ties") -> torch.Tensor:
    """TIES' elect + disjoint mean of the sparsified task vectors of ``tensors`` around ``w0`` (flat,
    compute dtype): the merged task vector, in one pass over the inputs.

    One pass suffices because the elected sign is that of (sum of the positive values) + (sum of the
    negative values): accumulating both sums and both counts, the agreeing mean is positive sum /
    positive count where the election is +, negative sum / negative count where it is -, 0 where the
    sums cancel exactly."""
    buffer, scratch = torch.empty_like(w0), torch.empty_like(w0)
    flags = torch.empty(w0.shape, dtype=torch.bool)
    positive, negative = torch.zeros_like(w0), torch.zeros_like(w0)
    n_positive, n_negative = torch.zeros_like(w0), torch.zeros_like(w0)
    n = 0
    for i, tau in task_vectors(tensors, w0, out=buffer):
        kept = sparsify(i, tau)
        positive.add_(torch.clamp(kept, min=0, out=scratch))
        negative.add_(torch.clamp(kept, max=0, out=scratch))
        n_positive.add_(torch.gt(kept, 0, out=flags))
        n_negative.add_(torch.lt(kept, 0, out=flags))
        n = i + 1
    if n == 0:
        raise ClipmergeError(f"{method} needs at least 1 fine-tuned model")
    mass = torch.add(positive, negative, out=scratch)  # the election's sum
    merged = positive.div_(n_positive.clamp_(min=1))  # where the election is +
    merged.masked_fill_(torch.le(mass, 0, out=flags), 0)
    merged.add_(negative.div_(n_negative.clamp_(min=1)).masked_fill_(torch.ge(mass, 0, out=flags), 0))
    return merged


def ties(tensors: Iterable[torch.Tensor], anchor: torch.Tensor, *, density: float = 0.2,
         scale: float = 1.0) -> torch.Tensor:
    """TIES-merge one tensor of N fine-tuned models.

    Args:
        tensors: the N >= 1 fine-tuned versions of the tensor. Iterated once, so a lazy iterable that
            reads each tensor on demand keeps one input alive at a time.
        anchor: the zero-shot tensor w0; same shape and dtype.
        density: the fraction of each task vector's elements (by magnitude, per tensor) kept, in (0, 1].
        scale: lambda, the weight of the merged task vector.

    Returns:
        The merged tensor, in the anchor's dtype.
    """
    check_options(density, scale)
    if not anchor.is_floating_point():
        return anchor.clone()
    w0 = flat_anchor(anchor)
    return finish(disjoint_merge(tensors, w0, lambda _, tau: trim(tau, density)), w0, scale, anchor)


def merge_tensor(tensors: Iterable[torch.Tensor], anchor: torch.Tensor, *, density: float = 0.2,
                 scale: float = 1.0):
    """The streaming driver's calling convention (clipmerge.merging.registry)."""
    return ties(tensors, anchor, density=density, scale=scale), None
