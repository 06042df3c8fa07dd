"""Merge methods as pure functions over tensors, registered by name, and a streaming driver.

``get(name)`` returns a :class:`MergeMethod`; ``merge_checkpoints`` applies a method to safetensors
files tensor by tensor. The modules state every choice the papers leave open; docs/merging.md
collects them.
"""

from clipmerge.merging.driver import MergeReport, merge_checkpoints
from clipmerge.merging.greedy_soup import GreedyResult, GreedyStep, greedy_soup
from clipmerge.merging.model_stock import TensorDiagnostics, model_stock
from clipmerge.merging.registry import METHOD_NAMES, REGISTRY, STREAMED_METHODS, MergeMethod, get
from clipmerge.merging.uniform_soup import uniform_soup
from clipmerge.merging.wise_ft import wise_ft

__all__ = [
    "METHOD_NAMES",
    "REGISTRY",
    "STREAMED_METHODS",
    "GreedyResult",
    "GreedyStep",
    "MergeMethod",
    "MergeReport",
    "TensorDiagnostics",
    "get",
    "greedy_soup",
    "merge_checkpoints",
    "model_stock",
    "uniform_soup",
    "wise_ft",
]
