"""DARE-TIES (DARE, Yu et al., ICML 2024, arXiv:2311.03099, as a plug-in before TIES-Merging; mergekit's
``dare_ties``): DARE's random drop and rescale in place of TIES' magnitude trim, then TIES' sign
election and disjoint mean.

With task vectors tau_i = w_i - w0 and DARE's sparsified d_i = m_i * tau_i / (1 - drop_rate)
(clipmerge.merging.dare), per element p:

    gamma_p = sign(sum_i d_i[p]);   A_p = {i : d_i[p] != 0 and sign(d_i[p]) = gamma_p}
    w = w0 + scale * mean_{i in A_p} d_i[p]      (w0 where A_p is empty)

Choices, made here (see also docs/merging.md):

- The masks are DARE's, from the same seeded generators (mask_seed, the tensor's key, the input
  index): for the same options ``dare`` and ``dare_ties`` drop the same elements. The election, the
  zero-election rule and the one pass over the inputs are TIES' (clipmerge.merging.ties).
- ``drop_rate`` (not mergekit's ``density`` = 1 - drop_rate, which mergekit requires without a
  default): the same option as ``dare``, default 0.9, DARE's headline rate (the paper's caveat on large
  deltas applies, see clipmerge.merging.dare).
- Disjoint *mean* of the agreeing values, then ``scale`` (default 1.0), as TIES-Merging after DARE in
  the authors' code. mergekit's ``dare_ties`` defaults to ``normalize: false`` (the agreeing values
  summed, weighted by per-model weights the user sets); that is not reproduced.
- Non-floating tensors (integer buffers) are copied from w0. Arithmetic in float32 (float64 stays
  float64), cast back to the input dtype.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from clipmerge.merging import dare as _dare
from clipmerge.merging.task_vectors import finish, flat_anchor
from clipmerge.merging.ties import disjoint_merge


def check_options(drop_rate: float = 0.9, scale: float = 1.0, mask_seed: int = 0) -> None:
    _dare.check_options(drop_rate, scale, mask_seed, method="dare_ties")


def dare_ties(tensors: Iterable[torch.Tensor], anchor: torch.Tensor, *, key: str, drop_rate: float = 0.9,
              scale: float = 1.0, mask_seed: int = 0) -> torch.Tensor:
    """DARE-TIES-merge one tensor of N fine-tuned models.

    Args:
        tensors: the N >= 1 fine-tuned versions of the tensor, iterated once.
        anchor: the zero-shot tensor w0; same shape and dtype.
        key: the tensor's state-dict key (it seeds the masks; the streaming driver passes it).
        drop_rate: p, the probability that an element of a task vector is dropped, in [0, 1).
        scale: lambda, the weight of the merged task vector.
        mask_seed: the seed of every mask of the merge.

    Returns:
        The merged tensor, in the anchor's dtype.
    """
    check_options(drop_rate, scale, mask_seed)
    if not anchor.is_floating_point():
        return anchor.clone()
    w0 = flat_anchor(anchor)

    def sparsify(i: int, tau: torch.Tensor) -> torch.Tensor:
        return _dare.drop_and_rescale(tau, drop_rate, _dare.mask_generator(mask_seed, key, i))

    return finish(disjoint_merge(tensors, w0, sparsify, method="dare_ties"), w0, scale, anchor)


def merge_tensor(tensors: Iterable[torch.Tensor], anchor: torch.Tensor, *, key: str, drop_rate: float = 0.9,
                 scale: float = 1.0, mask_seed: int = 0):
    """The streaming driver's calling convention (clipmerge.merging.registry); the driver passes ``key``."""
    return dare_ties(tensors, anchor, key=key, drop_rate=drop_rate, scale=scale, mask_seed=mask_seed), None
