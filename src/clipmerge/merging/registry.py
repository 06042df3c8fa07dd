"""The merge methods by name, mergekit-style: each has a pretty name, a reference and its pure function.

The table is explicit (no registration by import side effect). Methods that merge checkpoints tensor
by tensor also give ``merge_tensor``, one calling convention for the streaming driver:
``merge_tensor(tensors, anchor, **options) -> (tensor, diagnostics or None)`` (Model Stock's own
function has it; the others get a two-line adapter). Greedy soup is a
search that evaluates models, so it has no ``merge_tensor``; ``clipmerge greedy-soup`` runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import torch

from clipmerge.errors import ClipmergeError
from clipmerge.merging.greedy_soup import greedy_soup
from clipmerge.merging.model_stock import model_stock
from clipmerge.merging.uniform_soup import uniform_soup
from clipmerge.merging.wise_ft import wise_ft

# The config schema's method enum (a list, so `enum == METHOD_NAMES` compares) and the {method} wildcard
# use exactly these names.
# model_stock_periodic is a training procedure (clipmerge.periodic), not a merge of finished models.
METHOD_NAMES = ["uniform_soup", "greedy_soup", "model_stock", "model_stock_periodic", "wise_ft"]


@dataclass(frozen=True)
class MergeMethod:
    name: str
    pretty_name: str
    reference_url: str
    function: Callable
    merge_tensor: Callable | None = None
    needs_anchor: bool = False
    min_inputs: int = 1
    max_inputs: int | None = None
    # merge_tensor takes ``scratch``, a float32 buffer of N x numel elements the driver reuses.
    uses_scratch: bool = False


def _uniform_soup_tensor(tensors: Collection[torch.Tensor], anchor: None):
    return uniform_soup(tensors), None


def _wise_ft_tensor(tensors: Collection[torch.Tensor], anchor: torch.Tensor, alpha: float):
    (finetuned,) = tensors
    return wise_ft(anchor, finetuned, alpha), None


REGISTRY: dict[str, MergeMethod] = {
    m.name: m
    for m in (
        MergeMethod(
            "model_stock", "Model Stock", "https://arxiv.org/abs/2403.19522", model_stock,
            model_stock, needs_anchor=True, min_inputs=2, uses_scratch=True,
        ),
        MergeMethod(
            "uniform_soup", "Uniform Soup", "https://arxiv.org/abs/2203.05482", uniform_soup,
            _uniform_soup_tensor,
        ),
        MergeMethod(
            "wise_ft", "WiSE-FT", "https://arxiv.org/abs/2109.01903", wise_ft,
            _wise_ft_tensor, needs_anchor=True, max_inputs=1,
        ),
        MergeMethod("greedy_soup", "Greedy Soup", "https://arxiv.org/abs/2203.05482", greedy_soup),
    )
}
STREAMED_METHODS = tuple(name for name, m in REGISTRY.items() if m.merge_tensor is not None)


def get(name: str) -> MergeMethod:
    """The registered method ``name``; an unknown name raises ClipmergeError listing the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ClipmergeError(f"unknown merge method {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
