"""Model Stock (Jang et al., ECCV 2024), one merging ratio per state-dict tensor.

For fine-tuned tensors w_1..w_N (N >= 2) and the pre-trained anchor w0, with deltas d_i = w_i - w0:

    t   = N cos / (1 + (N - 1) cos)
    w_H = t * mean(w_i) + (1 - t) * w0

Choices the paper leaves open, made here (see also docs/merging.md):

- Granularity: one ratio per state-dict tensor, every tensor merged, the classification head
  included (as the authors' notebook merges ``classification_head``). Fused QKV weights get one angle.
- N > 2: ``cos`` is the cosine of the mean of all pairwise angles (``average="angles"``), the
  definition the authors gave (model-stock issue #2) and fusion_bench implements. mergekit
  averages the pairwise cosines instead (``average="cosines"``); the two agree at N = 2.
- A delta whose norm is at most ``eps`` (a tensor the fine-tune did not move) has no direction: every
  pair it is in counts as orthogonal (cos 0, 90 degrees), which is what the reference codes compute.
  When all deltas are zero (frozen tensor), or N = 2, this gives t = 0, i.e. w0. Unlike the
  references we do not add eps to the cosine's denominator, which biases cos for small deltas.
- A negative mean cosine would make t < 0 (extrapolating past w0, away from the fine-tunes) and
  t -> infinity as cos -> -1/(N-1). By default cos is clamped to 0, so t = 0 and the tensor is w0
  (``clamp_negative=False`` keeps the raw formula and raises if it is singular).
- Non-floating tensors (integer buffers) are copied from w0.
- Arithmetic is in float32 (float64 inputs stay float64); the result is cast back to the input dtype.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Literal

import torch

from clipmerge.errors import ClipmergeError
from clipmerge.merging.diagnostics import Guard, TensorDiagnostics

Average = Literal["angles", "cosines"]
EPS = 1e-12


def model_stock(
    finetuned: Collection[torch.Tensor],
    anchor: torch.Tensor,
    *,
    average: Average = "angles",
    clamp_negative: bool = True,
    eps: float = EPS,
    scratch: torch.Tensor | None = None,
) -> tuple[torch.Tensor, TensorDiagnostics]:
    """Merge one tensor of N fine-tuned models with Model Stock.

    Args:
        finetuned: the N >= 2 fine-tuned versions of the tensor. Iterated exactly once, so a lazy
            collection that reads each tensor on demand keeps only one input alive at a time.
        anchor: the pre-trained (zero-shot) tensor w0; same shape and dtype.
        average: "angles" (mean pairwise angle, then cos; the authors' definition) or "cosines"
            (mean pairwise cosine, as mergekit).
        clamp_negative: clamp a negative mean cosine to 0 (t = 0, result w0).
        eps: delta norms at or below this count as zero.
        scratch: optional 1-D buffer (float32, or float64 for float64 inputs) of at least N * numel
            elements whose first N * numel, viewed as [N, numel], receive the inputs; its contents
            are overwritten. The streaming driver reuses one for every tensor (a fresh [N, numel]
            buffer per tensor made the OS fault in N model-sizes of new pages per merge, about 40% of
            a 32-model merge's time) and reads input i straight into row i, which is then not copied.
            A smaller scratch, with ``finetuned`` able to ``read_columns(start, rows)`` (the driver's
            column), is filled block of columns by block: the Gram matrix and the delta sum are
            accumulated over blocks, so memory stays ~2 tensors + the scratch whatever N is (at
            N = 72 a ViT-B/32 merge's [N, numel] rows were 2.0x a whole checkpoint).

    Returns:
        The merged tensor (anchor's dtype) and its diagnostics.

    Raises:
        ClipmergeError: fewer than 2 tensors, an unknown ``average``, or (clamp off) a singular t.
    """
    n = len(finetuned)
    if n < 2:
        raise ClipmergeError(f"model_stock needs at least 2 fine-tuned models, got {n}")
    if average not in ("angles", "cosines"):
        raise ClipmergeError(f"model_stock: average must be 'angles' or 'cosines', got {average!r}")
    if not anchor.is_floating_point():
        return anchor.clone(), TensorDiagnostics(None, None, None, "non_float")

    compute = torch.promote_types(anchor.dtype, torch.float32)
    w0 = anchor.reshape(-1).to(compute)
    size = n * w0.numel()
    if (scratch is not None and scratch.dtype == anchor.dtype and n <= scratch.numel() < size
            and hasattr(finetuned, "read_columns")):  # the stored bytes are read straight into blocks
        gram, delta_sum = _blocked_gram(finetuned, w0, scratch)
    else:
        gram, delta_sum = _gram(finetuned, w0, scratch)
    cos, angle_deg, guard, norms = _mean_cosine(gram, average, eps)
    if cos < 0 and clamp_negative:
        cos, guard = 0.0, "negative_cos"
    t = _ratio(n, cos)
    # w_avg = w0 + mean(d)
    w_avg = delta_sum.div_(n).add_(w0)
    merged = w_avg.mul_(t).add_(w0, alpha=1.0 - t)
    diagnostics = TensorDiagnostics(cos, angle_deg, t, guard, norms)
    return merged.reshape(anchor.shape).to(anchor.dtype), diagnostics


def _gram(finetuned, w0: torch.Tensor, scratch) -> tuple[torch.Tensor, torch.Tensor]:
    """The deltas' Gram matrix (float64) and their sum, from all N inputs at once."""
    n = len(finetuned)
    # The N inputs as the rows of one [N, P] buffer, then their deltas: memory is N copies of this tensor.
    size = n * w0.numel()
    compute = w0.dtype
    if scratch is not None and scratch.dtype == compute and scratch.numel() >= size:
        rows = scratch[:size].view(n, w0.numel())
    else:
        rows = torch.empty((n, w0.numel()), dtype=compute)
    for row, w in zip(rows, finetuned, strict=True):
        if w.data_ptr() != row.data_ptr():  # the streaming driver reads each input straight into its row
            row.copy_(w.reshape(-1))
    deltas = rows.sub_(w0)  # in place: the inputs are not needed again, so the deltas take no memory
    delta_sum = deltas.sum(dim=0)
    # One GEMM gives every pairwise dot product. Blocking it by columns to keep the deltas in cache,
    # or splitting it by its symmetry, measured no faster: at N = 32 it is compute-bound (N^2 x numel
    # multiply-adds, benchmarks/README.md).
    return (deltas @ deltas.T).double(), delta_sum


def _blocked_gram(finetuned, w0: torch.Tensor, scratch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same, accumulated over blocks of columns that fit ``scratch`` (float64 Gram partial sums)."""
    n, numel = len(finetuned), w0.numel()
    width = scratch.numel() // n
    gram = torch.zeros((n, n), dtype=torch.float64)
    delta_sum = torch.empty_like(w0)
    for start in range(0, numel, width):
        stop = min(start + width, numel)
        block = finetuned.read_columns(start, scratch[: n * (stop - start)].view(n, stop - start))
        block.sub_(w0[start:stop])
        torch.sum(block, dim=0, out=delta_sum[start:stop])
        gram += (block @ block.T).double()
    return gram, delta_sum


def _mean_cosine(gram: torch.Tensor, average: Average,
                 eps: float) -> tuple[float, float, Guard | None, tuple[float, ...]]:
    """Mean pairwise cosine (per ``average``), mean pairwise angle, guard and the deltas' L2 norms (from
    the diagonal) of the deltas whose Gram matrix (every pairwise dot product) is ``gram``."""
    if not torch.isfinite(gram).all():
        raise ClipmergeError("model_stock: delta dot products are not finite (a NaN/inf input, or deltas above "
                             "~1e19 overflowing float32)")
    norms = gram.diagonal().clamp(min=0).sqrt()
    moving = norms > eps
    cosines = (gram / torch.outer(norms, norms).clamp(min=torch.finfo(torch.float64).tiny)).clamp(-1, 1)
    # A zero delta has no direction: its pairs count as orthogonal, as in the reference codes.
    cosines = torch.where(torch.outer(moving, moving), cosines, torch.zeros_like(cosines))
    i, j = torch.triu_indices(len(gram), len(gram), offset=1)
    pair_cos = cosines[i, j]
    angles = torch.rad2deg(torch.arccos(pair_cos))
    mean_angle = float(angles.mean())
    if average == "angles":
        cos = math.sin(math.radians(90.0 - mean_angle))  # = cos(mean_angle), but exactly 0 at 90 degrees
    else:
        cos = float(pair_cos.mean())
    return cos, mean_angle, None if bool(moving.all()) else "zero_delta", tuple(norms.tolist())


def _ratio(n: int, cos: float) -> float:
    """t = N cos / (1 + (N - 1) cos), the interpolation ratio towards the fine-tuned average."""
    denominator = 1.0 + (n - 1) * cos
    if denominator <= 1e-6:
        raise ClipmergeError(
            f"model_stock: mean cosine {cos:.4f} makes t singular for N={n}; keep the negative-cos clamp on"
        )
    return n * cos / denominator


# The streaming driver's calling convention (clipmerge.merging.registry) is model_stock's own.
merge_tensor = model_stock
