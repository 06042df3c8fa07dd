"""An evaluation set: a dataset whose labels index its own classes, and the projection of the head's
logits onto them (the set owns its label space, as in model-soups/wise-ft)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from clipmerge.errors import ClipmergeError


@dataclass
class EvalSet:
    """A dataset whose labels index its own classes, and the projection from head logits to them."""

    dataset: Dataset
    project: Callable[[torch.Tensor], torch.Tensor]
    num_classes: int


def _check_width(logits: torch.Tensor, head_width: int | None) -> None:
    if head_width is not None and logits.shape[1] != head_width:
        raise ClipmergeError(
            f"this eval set needs a head over the {head_width} ImageNet classes; got {logits.shape[1]} logits"
        )


def identity_projection(head_width: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Score every class of the head (ImageNet, V2, Sketch)."""

    def project(logits: torch.Tensor) -> torch.Tensor:
        _check_width(logits, head_width)
        return logits

    return project


def columns_projection(columns: Sequence[int],
                       head_width: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Keep ``columns`` of the head's logits, in that order (ImageNet-R/A's ``project_logits``, and a demo
    set that holds a subset of the classes)."""
    index = torch.tensor(list(columns), dtype=torch.long)

    def project(logits: torch.Tensor) -> torch.Tensor:
        _check_width(logits, head_width)
        return logits.index_select(1, index.to(logits.device))

    return project


def max_projection(groups: Sequence[Sequence[int]],
                   head_width: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Class k scores the max of the logits of ``groups[k]`` (ObjectNet's ``project_logits``)."""
    width = max(len(g) for g in groups)
    # Pad each group by repeating its first index: a repeated column never changes a max.
    index = torch.tensor([list(g) + [g[0]] * (width - len(g)) for g in groups], dtype=torch.long)

    def project(logits: torch.Tensor) -> torch.Tensor:
        _check_width(logits, head_width)
        return logits[:, index.to(logits.device)].amax(dim=2)

    return project
