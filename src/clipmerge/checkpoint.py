"""Checkpoints: safetensors weights with a meta.json beside them. No pickles anywhere.

Writes are atomic (``clipmerge.files.atomic_write``): a job killed mid-write never leaves a file
that looks complete.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from clipmerge.errors import ClipmergeError
from clipmerge.files import atomic_write, read_json, write_json  # noqa: F401 (part of the checkpoint API)

META_NAME = "meta.json"


def save_weights(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata=None) -> None:
    """Save a flat dict of tensors as safetensors, atomically."""
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(flat, tmp, metadata=metadata))


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


def assert_finite(tensor: torch.Tensor, key: str, path) -> None:
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise ClipmergeError(f"{path}: tensor {key!r} has {bad} NaN/inf values")


def meta_path(weights_path: str | os.PathLike) -> Path:
    return Path(weights_path).with_name(META_NAME)


def read_meta(weights_path: str | os.PathLike) -> dict:
    return read_json(meta_path(weights_path))


def git_sha() -> str:
    """The commit of the clipmerge source tree, or "unknown" outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
