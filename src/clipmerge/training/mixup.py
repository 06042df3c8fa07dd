"""Mixup (Zhang et al., 2018) on one micro-batch, with a seeded draw.

Choices the papers leave open (model-soups only records alpha):

- one lambda ~ Beta(alpha, alpha) per micro-batch, and each image is mixed with the batch reversed
  (timm's "batch" mode); with gradient accumulation every micro-batch gets its own draw, so mixup
  runs are not equivalent to the same batch without accumulation;
- lambda is folded to max(lambda, 1 - lambda): with reversal pairing, lambda and 1 - lambda give the
  same set of mixed images, so this changes nothing but makes the first label the dominant one, which
  is what train top-1 is measured against;
- the loss is lambda * CE(y) + (1 - lambda) * CE(y reversed), each with the recipe's label smoothing,
  which equals the cross-entropy against the mixed (smoothed) one-hot targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class MixedBatch:
    images: torch.Tensor
    labels: torch.Tensor
    partner_labels: torch.Tensor
    lam: float


def mixup(images: torch.Tensor, labels: torch.Tensor, alpha: float, seed: int) -> MixedBatch:
    """Mix ``images`` with their batch-reversed partners; ``alpha == 0`` returns the batch unchanged."""
    if alpha == 0:
        return MixedBatch(images, labels, labels, 1.0)
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    lam = max(lam, 1.0 - lam)
    mixed = images.mul(lam).add_(images.flip(0), alpha=1.0 - lam)
    return MixedBatch(mixed, labels, labels.flip(0), lam)


def mixup_loss(logits: torch.Tensor, batch: MixedBatch, label_smoothing: float) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` against the batch's mixed targets."""
    loss = F.cross_entropy(logits, batch.labels, label_smoothing=label_smoothing)
    if batch.lam == 1.0:
        return loss
    partner = F.cross_entropy(logits, batch.partner_labels, label_smoothing=label_smoothing)
    return batch.lam * loss + (1.0 - batch.lam) * partner
