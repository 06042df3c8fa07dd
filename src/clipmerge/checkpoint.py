"""Checkpoints: safetensors weights with a meta.json beside them. No pickles anywhere.

Every write goes to a temporary file in the destination folder and is moved into place with
``os.replace``, so a job killed mid-write never leaves a file that looks complete.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from clipmerge.errors import ClipmergeError

META_NAME = "meta.json"


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` and atomically move the result to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True)
            fh.write("\n")

    atomic_write(path, write)


def read_json(path: str | os.PathLike) -> dict:
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError as e:
        raise ClipmergeError(f"{path}: file not found") from e
    except json.JSONDecodeError as e:
        raise ClipmergeError(f"{path}: not valid JSON ({e})") from e


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
