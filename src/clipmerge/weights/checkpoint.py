"""Safetensors checkpoints read and written whole. No pickles anywhere.

Writes are atomic (``clipmerge.files.atomic_write``): a job killed mid-write never leaves a file
that looks complete.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from clipmerge.errors import ClipmergeError
from clipmerge.weights.streaming import Layout, TensorSpec, assert_finite, write_order, write_streaming

# The header ``format`` of a classifier checkpoint (image tower + head, clipmerge.models.classifier).
CLASSIFIER_FORMAT = "clipmerge-classifier-v1"


def save_weights(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata=None) -> None:
    """Save a flat dict of tensors as safetensors, atomically, with the streaming writer: same tensor
    order as safetensors' ``save_file`` but the header metadata sorted (``save_file`` orders it by hash,
    i.e. differently in every process), so the same weights always give the same bytes."""
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    layout = Layout({k: TensorSpec(v.dtype, tuple(v.shape)) for k, v in flat.items()}, dict(metadata or {}))
    write_streaming(path, layout, ((k, flat[k]) for k in write_order(layout.specs)))


def open_weights(path: str | os.PathLike):
    """Open a safetensors file lazily; a missing or corrupt file raises an error naming it."""
    if not Path(path).is_file():
        raise ClipmergeError(f"{path}: checkpoint not found")
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError, ValueError) as e:
        raise ClipmergeError(f"{path}: not a readable safetensors file ({e})") from e


def header_metadata(path: str | os.PathLike) -> dict[str, str]:
    with open_weights(path) as fh:
        return fh.metadata() or {}


def classifier_arch(path: str | os.PathLike) -> tuple[str, int]:
    """(arch, num_classes) from a classifier checkpoint's header; other files raise a clear error."""
    meta = header_metadata(path)
    if meta.get("format") != CLASSIFIER_FORMAT:
        raise ClipmergeError(f"{path}: not a clipmerge classifier checkpoint (header format={meta.get('format')!r})")
    return meta["arch"], int(meta["num_classes"])


def load_weights(path: str | os.PathLike, check_finite: bool = True) -> dict[str, torch.Tensor]:
    """Load every tensor; truncated files and NaN/inf values raise an error naming file and tensor."""
    tensors = {}
    with open_weights(path) as fh:
        for key in fh.keys():
            try:
                tensor = fh.get_tensor(key)
            except (SafetensorError, OSError, ValueError, RuntimeError) as e:
                raise ClipmergeError(f"{path}: tensor {key!r} cannot be read ({e}); truncated file?") from e
            if check_finite:
                assert_finite(tensor, key, path)
            tensors[key] = tensor
    return tensors


def load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], path) -> None:
    """Load ``state`` into ``model``; missing, unexpected or misshapen tensors raise an error naming them."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ClipmergeError(
            f"{path}: does not match the architecture (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ClipmergeError(
                f"{path}: tensor {key!r} has shape {tuple(value.shape)}, the architecture expects "
                f"{tuple(expected[key].shape)} (checkpoint of another architecture?)"
            )
    model.load_state_dict(state, strict=True)
