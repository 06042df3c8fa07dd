"""WiSE-FT (Wortsman et al., CVPR 2022): linear interpolation of the zero-shot and fine-tuned weights.

Choices: every tensor is interpolated, the head included; arithmetic in float32 (float64 stays
float64), cast back to the input dtype; non-floating tensors are taken from the zero-shot model.
"""

from __future__ import annotations

from collections.abc import Collection

import torch

from clipmerge.errors import ClipmergeError


def check_alpha(alpha: float) -> float:
    """``alpha`` itself if it lies in [0, 1]; otherwise ClipmergeError."""
    if not 0.0 <= alpha <= 1.0:
        raise ClipmergeError(f"wise_ft: alpha must be in [0, 1], got {alpha}")
    return alpha


def check_options(alpha: float) -> None:
    check_alpha(alpha)


def wise_ft(zeroshot: torch.Tensor, finetuned: torch.Tensor, alpha: float) -> torch.Tensor:
    """(1 - alpha) * zeroshot + alpha * finetuned for one tensor.

    Args:
        zeroshot: the zero-shot tensor (alpha = 0 returns it exactly).
        finetuned: the fine-tuned tensor, same shape and dtype (alpha = 1 returns it exactly).
        alpha: mixing coefficient in [0, 1].

    Returns:
        The interpolated tensor, in the inputs' dtype.
    """
    check_alpha(alpha)
    if not zeroshot.is_floating_point():
        return zeroshot.clone()
    compute = torch.promote_types(zeroshot.dtype, torch.float32)
    mixed = zeroshot.to(compute).mul(1.0 - alpha).add_(finetuned.to(compute), alpha=alpha)
    return mixed.to(zeroshot.dtype)


def merge_tensor(tensors: Collection[torch.Tensor], anchor: torch.Tensor, alpha: float):
    """The streaming driver's calling convention (clipmerge.merging.registry): one fine-tune."""
    (finetuned,) = tensors
    return wise_ft(anchor, finetuned, alpha), None
