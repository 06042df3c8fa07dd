"""Atomic file writes and JSON I/O, without torch: shared by the checkpoint code and the torch-free
tracking/table/plot modules.

Every write goes to a temporary file in the destination folder and is moved into place with
``os.replace``, so a job killed mid-write never leaves a file that looks complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from clipmerge.errors import ClipmergeError


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


def read_json(path: str | os.PathLike):
    """Read a JSON file; a missing or malformed file raises an error naming it."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError as e:
        raise ClipmergeError(f"{path}: file not found") from e
    except json.JSONDecodeError as e:
        raise ClipmergeError(f"{path}: not valid JSON ({e})") from e


def read_object(path: str | os.PathLike, required: tuple[str, ...] = ()) -> dict:
    """Read a JSON object holding the ``required`` keys; anything else raises an error naming the file."""
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise ClipmergeError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise ClipmergeError(f"{path}: missing key(s) {', '.join(missing)}")
    return obj
