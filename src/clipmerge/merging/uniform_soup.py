"""Uniform soup (Wortsman et al., ICML 2022): the plain average of N models, tensor by tensor.

Choices: the sum runs in float32 (float64 inputs stay float64) in input order and is cast back to the
input dtype; non-floating tensors (integer buffers) are taken from the first model.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from clipmerge.errors import ClipmergeError


def uniform_soup(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """Average one tensor over N models.

    Args:
        tensors: the N >= 1 versions of the tensor, same shape and dtype. Iterated once with a running
            sum, so a lazy iterable that reads each tensor on demand keeps one input alive at a time.

    Returns:
        The mean, in the inputs' dtype.
    """
    it = iter(tensors)
    first = next(it, None)
    if first is None:
        raise ClipmergeError("uniform_soup needs at least 1 model")
    if not first.is_floating_point():
        return first.clone()
    total = first.to(torch.promote_types(first.dtype, torch.float32), copy=True)
    n = 1
    for tensor in it:
        total.add_(tensor)
        n += 1
    return total.div_(n).to(first.dtype)


def merge_tensor(tensors: Iterable[torch.Tensor], anchor: None):
    """The streaming driver's calling convention (clipmerge.merging.registry)."""
    return uniform_soup(tensors), None
