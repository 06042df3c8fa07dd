"""The merge methods by name, mergekit-style: each has a pretty name, a reference and its pure function.

The table is explicit and torch-free: each entry names the module holding the method, which is
imported only when the method is used. So Snakemake can read the table when it builds the DAG, and
the code inputs of a merge are the modules of that method alone (clipmerge.workflow.code_inputs).

A method's module defines the function named like the method; tensor-wise methods also define
``merge_tensor(tensors, anchor, **options) -> (tensor, diagnostics or None)``, the calling convention
of the streaming driver, and may define ``check_options(**options)``, called before anything is read.
An entry with ``needs_key`` also gets ``key=<the tensor's state-dict key>`` from the driver (DARE's
masks are seeded per tensor); ``key`` is then no user option.
Greedy soup is a search that evaluates models, so it has no ``merge_tensor``; ``clipmerge greedy-soup``
runs it. Method names are ``clipmerge.layout.METHOD_NAMES``: the registry
holds all of them but model_stock_periodic, a training procedure (clipmerge.training.periodic).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from clipmerge.errors import ClipmergeError


@dataclass(frozen=True)
class MergeMethod:
    name: str
    pretty_name: str
    reference_url: str
    module: str
    tensorwise: bool = True
    needs_anchor: bool = False
    min_inputs: int = 1
    max_inputs: int | None = None
    # merge_tensor takes ``scratch``, a float32 buffer of N x numel elements the driver reuses.
    uses_scratch: bool = False
    # merge_tensor takes ``key``, the tensor's state-dict key (DARE seeds its masks with it).
    needs_key: bool = False

    @property
    def function(self) -> Callable:
        """The method's pure function (imports its module)."""
        return getattr(importlib.import_module(self.module), self.name)

    @property
    def merge_tensor(self) -> Callable | None:
        """The per-tensor function the streaming driver calls, or None for a search (greedy soup)."""
        return importlib.import_module(self.module).merge_tensor if self.tensorwise else None

    def check_options(self, options: dict) -> None:
        """Validate the method's options with its module's ``check_options``, if it has one."""
        check = getattr(importlib.import_module(self.module), "check_options", None)
        if check is not None:
            check(**options)


REGISTRY: dict[str, MergeMethod] = {
    m.name: m
    for m in (
        MergeMethod("model_stock", "Model Stock", "https://arxiv.org/abs/2403.19522", "clipmerge.merging.model_stock",
                    needs_anchor=True, min_inputs=2, uses_scratch=True),
        MergeMethod("uniform_soup", "Uniform Soup", "https://arxiv.org/abs/2203.05482",
                    "clipmerge.merging.uniform_soup"),
        MergeMethod("wise_ft", "WiSE-FT", "https://arxiv.org/abs/2109.01903", "clipmerge.merging.wise_ft",
                    needs_anchor=True, max_inputs=1),
        MergeMethod("task_arithmetic", "Task Arithmetic", "https://arxiv.org/abs/2212.04089",
                    "clipmerge.merging.task_arithmetic", needs_anchor=True),
        MergeMethod("ties", "TIES-Merging", "https://arxiv.org/abs/2306.01708", "clipmerge.merging.ties",
                    needs_anchor=True),
        MergeMethod("dare", "DARE", "https://arxiv.org/abs/2311.03099", "clipmerge.merging.dare",
                    needs_anchor=True, needs_key=True),
        MergeMethod("dare_ties", "DARE-TIES", "https://arxiv.org/abs/2311.03099", "clipmerge.merging.dare_ties",
                    needs_anchor=True, needs_key=True),
        MergeMethod("slerp", "SLERP", "https://doi.org/10.1145/325334.325242", "clipmerge.merging.slerp",
                    needs_anchor=True, min_inputs=2, max_inputs=2),
        MergeMethod("greedy_soup", "Greedy Soup", "https://arxiv.org/abs/2203.05482", "clipmerge.merging.greedy_soup",
                    tensorwise=False),
    )
}
STREAMED_METHODS = tuple(name for name, m in REGISTRY.items() if m.tensorwise)


def get(name: str) -> MergeMethod:
    """The registered method ``name``; an unknown name raises ClipmergeError listing the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ClipmergeError(f"unknown merge method {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
