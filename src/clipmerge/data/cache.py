"""A preprocessed-image cache: decode and resize a dataset once, evaluate many models on it.

Greedy soup evaluates every candidate soup on the same held-out images. Decoding and resizing JPEGs
costs far more than a forward pass of a small model, so the images are preprocessed once: the eval
transform up to (not including) its final Normalize, stored as uint8 [N, 3, H, W] (4x smaller than
float32 and exact: ToTensor only divides uint8 pixels by 255). Each batch is normalised on the fly,
on the device it is evaluated on.

On disk the cache is a safetensors file (``images`` uint8, ``labels`` int64) whose header records the
mean/std, a fingerprint of the files (names, sizes, mtimes) and transform it was made from, and a
sha256 per chunk of images. It is written atomically and read chunk by chunk (one chunk in memory; the
OS page cache keeps the file hot across passes); every chunk is checked against its digest as it is
read, so a corrupt cache raises :class:`CorruptCache` instead of giving numbers, and :func:`with_cache`
rebuilds it and starts over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError, safe_open
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from clipmerge.errors import ClipmergeError
from clipmerge.weights.checkpoint import save_weights

log = logging.getLogger(__name__)

T_ = TypeVar("T_")
FORMAT = "clipmerge-image-cache-v2"
# Images per digest: 256 x 224 x 224 x 3 = 38.5 MB per chunk at paper scale, 196 digests for ImageNet val.
CHUNK = 256


class CorruptCache(ClipmergeError):
    """A cache file whose bytes no longer match the digests written with it."""


def split_normalize(transform: T.Compose) -> tuple[T.Compose, T.Normalize]:
    """Split an eval transform ending in Normalize into (everything before it, the Normalize)."""
    steps = getattr(transform, "transforms", None)
    if not steps or not isinstance(steps[-1], T.Normalize):
        raise ClipmergeError(f"the image cache needs a Compose transform ending in Normalize, got {transform!r}")
    return T.Compose([*steps[:-1], ToUint8()]), steps[-1]


class ToUint8:
    """ToTensor's floats in [0, 1] back to the exact uint8 pixel values they came from."""

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image.mul(255).round_().to(torch.uint8)

    def __repr__(self) -> str:  # stable across runs: it is part of the cache fingerprint
        return f"{type(self).__name__}()"


def file_keys(paths: Sequence[str | os.PathLike], root: str | os.PathLike) -> list[str]:
    """``<path relative to root>:<size>:<mtime_ns>`` of each file: a cache of them is stale once any
    file is replaced or edited (a stat per file; the images are not read)."""
    keys = []
    for path in paths:
        stat = os.stat(path)
        keys.append(f"{Path(path).relative_to(root).as_posix()}:{stat.st_size}:{stat.st_mtime_ns}")
    return keys


def fingerprint(sample_ids: Sequence[str], labels: Sequence[int], pre_transform, normalize: T.Normalize) -> str:
    """sha256 of what a cache is made of: the sample ids (:func:`file_keys`), labels and transforms."""
    digest = hashlib.sha256()
    digest.update(json.dumps([list(sample_ids), list(labels), repr(pre_transform), repr(normalize)]).encode())
    return digest.hexdigest()


class ImageCache:
    """Preprocessed uint8 images and their labels, served as normalised float batches.

    Args:
        images: uint8 [N, 3, H, W], or anything that slices like it along dim 0 (a safetensors slice).
        labels: int64 [N].
        mean, std: the per-channel normalisation of the model's eval transform.
        digests: sha256 of each CHUNK of ``images`` (a cache file's), checked as the chunks are read.
        source: the file, named by errors.
    """

    def __init__(self, images, labels: torch.Tensor, mean: Sequence[float], std: Sequence[float], close=None,
                 digests: Sequence[str] | None = None, source: str = "in-memory cache"):
        self.images = images
        self.labels = labels
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self._close = close
        self.digests = digests
        self.source = source

    def __len__(self) -> int:
        return len(self.labels)

    def chunks(self) -> Iterator[torch.Tensor]:
        """The uint8 images, CHUNK at a time, each verified against its digest when there are digests."""
        for i, start in enumerate(range(0, len(self), CHUNK)):
            chunk = self.images[start : start + CHUNK]
            if self.digests is not None and chunk_digest(chunk) != self.digests[i]:
                raise CorruptCache(f"{self.source}: images {start}..{start + len(chunk) - 1} do not match the "
                                   "digest written with them (the file is corrupt)")
            yield chunk

    def batches(self, batch_size: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (normalised float32 images on ``device``, labels) in order."""
        mean, std = self.mean.to(device), self.std.to(device)
        start, pending = 0, None
        for chunk in self.chunks():
            pending = chunk if pending is None or not len(pending) else torch.cat([pending, chunk])
            # A batch may span two chunks; the last batch is whatever is left once every chunk is read.
            while len(pending) >= batch_size or (len(pending) and start + len(pending) == len(self)):
                batch, pending = pending[:batch_size], pending[batch_size:]
                if device.type == "cuda":
                    batch = batch.pin_memory()
                images = batch.to(device, non_blocking=True).float().div_(255).sub_(mean).div_(std)
                yield images, self.labels[start : start + len(batch)]
                start += len(batch)

    def close(self) -> None:
        if self._close is not None:
            self._close()

    def __enter__(self) -> ImageCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def preprocess(dataset: Dataset, batch_size: int = 64, workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every item of ``dataset`` (its transform must yield uint8 [3, H, W]) into one tensor.

    Returns:
        (images uint8 [N, 3, H, W], labels int64 [N]), in dataset order.
    """
    n = len(dataset)
    if n == 0:
        raise ClipmergeError("the image cache cannot be built from an empty dataset")
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    images = labels = None
    start, began = 0, time.perf_counter()
    for batch, batch_labels in loader:
        if batch.dtype != torch.uint8:
            raise ClipmergeError(f"the image cache stores uint8 images; the transform gave {batch.dtype}")
        if images is None:  # preallocate once: no list of batches, no concatenation copy
            images = torch.empty((n, *batch.shape[1:]), dtype=torch.uint8)
            labels = torch.empty(n, dtype=torch.int64)
        images[start : start + len(batch)] = batch
        labels[start : start + len(batch)] = batch_labels
        start += len(batch)
    log.info("preprocessed %d images to %s in %.1f s", n, list(images.shape[1:]), time.perf_counter() - began)
    return images, labels


def chunk_digest(images: torch.Tensor) -> str:
    return hashlib.sha256(images.contiguous().numpy().data).hexdigest()


def save_cache(
    path: str | os.PathLike, images: torch.Tensor, labels: torch.Tensor, normalize: T.Normalize, key: str
) -> None:
    """Write the cache atomically; ``key`` is the :func:`fingerprint` it was built for."""
    metadata = {
        "format": FORMAT,
        "fingerprint": key,
        "mean": json.dumps(list(normalize.mean)),
        "std": json.dumps(list(normalize.std)),
        "chunk_digests": json.dumps([chunk_digest(images[s : s + CHUNK]) for s in range(0, len(images), CHUNK)]),
        "labels_digest": chunk_digest(labels),
    }
    save_weights({"images": images, "labels": labels}, path, metadata=metadata)


def cache_fingerprint(path: str | os.PathLike) -> str | None:
    """The fingerprint recorded in a cache file, or None if the file is missing or not a cache."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return None
    return metadata.get("fingerprint") if metadata.get("format") == FORMAT else None


def open_cache(path: str | os.PathLike) -> ImageCache:
    """Open a cache file; images are read one batch at a time. Close it (or use ``with``) when done."""
    try:
        fh = safe_open(str(path), framework="pt")
        metadata = fh.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ClipmergeError(f"{path}: not a clipmerge image cache (header format={metadata.get('format')!r})")
        labels = fh.get_tensor("labels")
        images = fh.get_slice("images")
    except (SafetensorError, OSError, ValueError) as e:
        raise CorruptCache(f"{path}: unreadable image cache ({e}); delete it to rebuild") from e
    if chunk_digest(labels) != metadata.get("labels_digest"):
        raise CorruptCache(f"{path}: the labels do not match the digest written with them (the file is corrupt)")
    mean, std = json.loads(metadata["mean"]), json.loads(metadata["std"])
    return ImageCache(images, labels, mean, std, close=lambda: fh.__exit__(None, None, None),
                      digests=json.loads(metadata["chunk_digests"]), source=str(path))


def load_or_build(
    path: str | os.PathLike | None,
    make_dataset: Callable[[T.Compose], Dataset],
    sample_ids: Sequence[str],
    labels: Sequence[int],
    transform: T.Compose,
    batch_size: int = 64,
    workers: int = 0,
) -> ImageCache:
    """The cache of a dataset under ``transform``: reused from ``path`` if it was built from the same
    files and transform, else built (and written to ``path`` if one is given, else kept in memory).

    Args:
        path: cache file, or None for an in-memory cache.
        make_dataset: builds the dataset with the given (pre-normalisation) transform.
        sample_ids, labels: identify the dataset's items for the fingerprint (:func:`file_keys`).
        transform: the model's eval transform, ending in Normalize.
    """
    pre_transform, normalize = split_normalize(transform)
    key = fingerprint(sample_ids, labels, pre_transform, normalize)
    if path is not None and Path(path).is_file():
        found = cache_fingerprint(path)
        if found == key:
            try:
                opened = open_cache(path)
                log.info("reusing image cache %s", path)
                return opened
            except CorruptCache as e:
                log.warning("%s; rebuilding it", e)
        elif found is None:
            log.warning("%s: unreadable or not an image cache (a partial file?); rebuilding it", path)
        else:
            log.info("image cache %s was built from other files or another transform; rebuilding it", path)
    images, cached_labels = preprocess(make_dataset(pre_transform), batch_size, workers)
    if path is None:
        return ImageCache(images, cached_labels, normalize.mean, normalize.std)
    save_cache(path, images, cached_labels, normalize, key)
    del images
    return open_cache(path)


def with_cache(use: Callable[[ImageCache], T_], path: str | os.PathLike | None, *build_args, **build_kwargs) -> T_:
    """``use(cache)`` on :func:`load_or_build`'s cache. A cache found corrupt while ``use`` reads it is
    deleted, rebuilt and ``use`` run again from the start, so no number ever comes from corrupt bytes."""
    try:
        with load_or_build(path, *build_args, **build_kwargs) as image_cache:
            return use(image_cache)
    except CorruptCache as e:
        if path is None:
            raise
        log.warning("%s; deleting it, rebuilding it and starting over", e)
        Path(path).unlink(missing_ok=True)
    with load_or_build(path, *build_args, **build_kwargs) as image_cache:
        return use(image_cache)
