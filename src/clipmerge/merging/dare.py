"""DARE (Yu et al., "Language Models are Super Mario: Absorbing Abilities from Homologous Models as a Free
Lunch", ICML 2024, arXiv:2311.03099): drop each task-vector element at random with probability p,
rescale the survivors by 1/(1 - p), then combine the sparsified vectors by task arithmetic.

With task vectors tau_i = w_i - w0 (w0 = the zero-shot model, the anchor) and Bernoulli masks m_i
(m_i[p] = 0 with probability ``drop_rate``):

    w = w0 + scale * sum_i (m_i * tau_i) / (1 - drop_rate)

E[m_i * tau_i / (1 - p)] = tau_i, so the merge equals task arithmetic with the same scale in expectation,
and exactly at drop_rate 0.

Choices the paper leaves open, made here (see also docs/merging.md):

- ``drop_rate`` default 0.9, the paper's headline rate. The paper's own caveat: dropping works because
  supervised fine-tuning moves weights very little (it measures deltas within about 0.002); where
  fine-tuning moved the weights much more (its continued-pre-training example) DARE fails. Full
  fine-tuning of a CLIP image tower can be in that regime: check ``dare`` against ``task_arithmetic``.
- ``scale`` default 1.0: DARE's merges add the rescaled vectors with scaling 1 (the authors' MergeLM
  code; mergekit's dare_linear with weight 1), i.e. sum_i, not mean_i. ``scale = 1/N`` gives the mean.
- The masks are seeded and deterministic: the mask of input i on tensor ``key`` comes from a
  torch.Generator seeded with the first 8 bytes of sha256("clipmerge-dare", mask_seed, key, i) (never
  Python's salted ``hash()``), so a merge is reproducible, two tensors or two inputs never share a
  mask, and one tensor's mask does not depend on which other tensors exist or their order. The masks
  are drawn in float32 whatever the checkpoint's dtype (same seed -> same mask in fp16, fp32 or fp64),
  u ~ U[0, 1) and dropped where u < drop_rate. Changing the inputs' order changes which mask each
  gets. torch does not promise the same random stream across its versions; within one it is fixed.
- Dropping is per element of every tensor, the head included; non-floating tensors (integer buffers)
  are copied from w0. Arithmetic in float32 (float64 stays float64), summed in input order, cast back
  to the input dtype. One pass; memory a few copies of one tensor (w0, the sum, one task vector, its
  uniform draws).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch

from clipmerge.errors import ClipmergeError
from clipmerge.merging.task_vectors import check_real, check_unit, finish, flat_anchor, task_vectors


def check_options(drop_rate: float = 0.9, scale: float = 1.0, mask_seed: int = 0, method: str = "dare") -> None:
    check_unit(method, "drop_rate", drop_rate, high_open=True)
    check_real(method, "scale", scale)
    if isinstance(mask_seed, bool) or not isinstance(mask_seed, int) or mask_seed < 0:
        raise ClipmergeError(f"{method}: mask_seed must be an integer >= 0, got {mask_seed!r}")


def mask_generator(mask_seed: int, key: str, index: int) -> torch.Generator:
    """The generator of input ``index``'s mask on tensor ``key``: seeded by a stable hash of all three."""
    digest = hashlib.sha256(f"clipmerge-dare\0{int(mask_seed)}\0{key}\0{int(index)}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def drop_and_rescale(tau: torch.Tensor, drop_rate: float, generator: torch.Generator) -> torch.Tensor:
    """``tau`` (flat) with each element zeroed with probability ``drop_rate`` and the rest divided by
    1 - drop_rate, in place. drop_rate 0 returns ``tau`` untouched (no draws)."""
    if drop_rate == 0:
        return tau
    draws = torch.rand(tau.numel(), generator=generator, dtype=torch.float32)
    return tau.masked_fill_(draws < drop_rate, 0).div_(1.0 - drop_rate)


def dare(tensors: Iterable[torch.Tensor], anchor: torch.Tensor, *, key: str, drop_rate: float = 0.9,
         scale: float = 1.0, mask_seed: int = 0) -> torch.Tensor:
    """DARE + task arithmetic for one tensor.

    Args:
        tensors: the N >= 1 fine-tuned versions of the tensor, iterated once.
        anchor: the zero-shot tensor w0; same shape and dtype.
        key: the tensor's state-dict key (it seeds the masks; the streaming driver passes it).
        drop_rate: p, the probability that an element of a task vector is dropped, in [0, 1).
        scale: lambda, the weight of the sum of the rescaled task vectors.
        mask_seed: the seed of every mask of the merge.

    Returns:
        The merged tensor, in the anchor's dtype.
    """
    check_options(drop_rate, scale, mask_seed)
    if not anchor.is_floating_point():
        return anchor.clone()
    w0 = flat_anchor(anchor)
    total, buffer, n = torch.zeros_like(w0), torch.empty_like(w0), 0
    for i, tau in task_vectors(tensors, w0, out=buffer):
        total.add_(drop_and_rescale(tau, drop_rate, mask_generator(mask_seed, key, i)))
        n += 1
    if n == 0:
        raise ClipmergeError("dare needs at least 1 fine-tuned model")
    return finish(total, w0, scale, anchor)


def merge_tensor(tensors: Iterable[torch.Tensor], anchor: torch.Tensor, *, key: str, drop_rate: float = 0.9,
                 scale: float = 1.0, mask_seed: int = 0):
    """The streaming driver's calling convention (clipmerge.merging.registry); the driver passes ``key``."""
    return dare(tensors, anchor, key=key, drop_rate=drop_rate, scale=scale, mask_seed=mask_seed), None
