"""The predictions file beside every eval JSON, ``eval/<model>/<eval_set>.predictions.safetensors``:
what one model said about every image of one set, saved once, so the ensemble, the confidence
intervals and the paired tests never run a model again. Torch-free (numpy + safetensors).

Tensors:
- ``logits`` float16 [n, classes]: the logits in the set's own label space (after the adapter's
  projection: 200 columns for ImageNet-R/A, 113 max-pooled classes for ObjectNet); fp16 halves the
  size and is only read by the ensemble.
- ``labels`` int64 [n]: the set's labels, in image order.
- ``top1`` int64 [n]: the predicted class, taken from the same fp32 ranking as the eval JSON's top-1,
  so accuracy from this file equals the JSON's exactly (fp16 rounding could create ties otherwise).

Header metadata: one entry, ``predictions``, holding the JSON (sorted keys) of ``format``, ``model``,
``eval_set``, ``samples`` (the images' paths relative to the set's root, in order) and
``order_sha256`` (their digest): two files may be compared image by image only if their digests
agree. One entry, because safetensors writes a metadata map in no fixed order, and the same
predictions must give the same bytes.

Size at paper scale: 2 bytes x images x classes for the logits, ~250 MB per model over ImageNet
(50,000 x 1000: 100 MB), V2 (20 MB), R (12 MB), Sketch (102 MB), ObjectNet (4 MB) and A (3 MB), plus
16 bytes per image for labels and predictions and the image paths in the header.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipmerge.errors import ClipmergeError
from clipmerge.files import atomic_write

FORMAT = "clipmerge-predictions-v1"
METADATA_KEY = "predictions"
TOP_K = 5


@dataclass(frozen=True)
class Predictions:
    """One model's predictions on one set; ``logits`` is None when only ``top1`` was read."""

    model: str
    eval_set: str
    labels: np.ndarray
    top1: np.ndarray
    order_sha256: str
    path: Path
    logits: np.ndarray | None = None
    samples: list[str] | None = None  # read with the logits

    @property
    def correct(self) -> np.ndarray:
        """Per image, whether the top-1 prediction is right (bool [n])."""
        return self.top1 == self.labels


def order_digest(samples: list[str]) -> str:
    return hashlib.sha256(json.dumps(samples).encode()).hexdigest()


def ranked(logits: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """The ``k`` best classes of each row, best first; among equal logits the lower class first."""
    k = min(k, logits.shape[1])
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]


def topk_accuracy(ranking: np.ndarray, labels: np.ndarray, ks=(1, 5)) -> dict[int, float]:
    """Percent of rows whose label is among the first k of ``ranking`` ([n, >= 1] class indices)."""
    if len(labels) == 0:
        return {k: float("nan") for k in ks}
    hits = ranking == labels[:, None]
    return {k: 100.0 * float(hits[:, :k].any(axis=1).mean()) for k in ks}


def write_predictions(path: str | os.PathLike, *, model: str, eval_set: str, logits: np.ndarray,
                      labels: np.ndarray, top1: np.ndarray, samples: list[str]) -> None:
    """Write the predictions of ``model`` on ``eval_set`` atomically (shapes checked)."""
    from safetensors.numpy import save_file

    n = len(samples)
    if logits.ndim != 2 or logits.shape[0] != n or labels.shape != (n,) or top1.shape != (n,):
        raise ClipmergeError(f"{path}: predictions of {n} images need logits [n, classes], labels [n] and top1 [n]; "
                             f"got {logits.shape}, {labels.shape}, {top1.shape}")
    tensors = {"logits": np.ascontiguousarray(logits, dtype=np.float16),
               "labels": np.ascontiguousarray(labels, dtype=np.int64),
               "top1": np.ascontiguousarray(top1, dtype=np.int64)}
    record = {"format": FORMAT, "model": model, "eval_set": eval_set, "samples": samples,
              "order_sha256": order_digest(samples)}
    metadata = {METADATA_KEY: json.dumps(record, sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_predictions(path: str | os.PathLike, *, logits: bool = False) -> Predictions:
    """Read a predictions file (its logits too if ``logits``); a file that is not one names what is wrong."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    wanted = ["labels", "top1", *(["logits"] if logits else [])]
    try:
        with safe_open(str(path), framework="numpy") as fh:
            try:
                meta = json.loads((fh.metadata() or {}).get(METADATA_KEY, "{}"))
            except ValueError as e:
                raise ClipmergeError(f"{path}: its {METADATA_KEY!r} header entry is not JSON ({e})") from e
            if meta.get("format") != FORMAT:
                raise ClipmergeError(f"{path}: not a predictions file (format {meta.get('format')!r}, "
                                     f"expected {FORMAT!r})")
            missing = [key for key in wanted if key not in fh.keys()]
            if missing:
                raise ClipmergeError(f"{path}: tensor(s) {missing} missing")
            arrays = {key: fh.get_tensor(key) for key in wanted}
    except FileNotFoundError as e:
        raise ClipmergeError(f"{path}: file not found") from e
    except (SafetensorError, OSError) as e:
        raise ClipmergeError(f"{path}: unreadable predictions file ({e})") from e
    n = arrays["labels"].shape[0]
    if arrays["top1"].shape != (n,) or (logits and arrays["logits"].shape[0] != n):
        raise ClipmergeError(f"{path}: tensors disagree on the number of images ({n} labels)")
    return Predictions(meta.get("model", ""), meta.get("eval_set", ""), arrays["labels"], arrays["top1"],
                       meta.get("order_sha256", ""), path,
                       arrays["logits"].astype(np.float32) if logits else None,
                       meta.get("samples") if logits else None)


def check_same_images(first: Predictions, other: Predictions) -> None:
    """Two models' predictions can be compared image by image only on the same images in the same order."""
    if other.order_sha256 != first.order_sha256 or not np.array_equal(other.labels, first.labels):
        raise ClipmergeError(f"{other.path}: not the same images (order or labels) as {first.path}; "
                             "re-evaluate both on the same set")

