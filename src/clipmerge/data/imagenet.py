"""Adapters for ImageNet and its five distribution shifts, following the model-soups/wise-ft protocol.

Each builder takes ``(root, transform, classnames)`` and returns an :class:`EvalSet` whose labels live
in the set's own label space and whose ``project`` maps the head's 1000 ImageNet logits onto it:

========================  =============================================  ==========================
adapter                   root                                           labels / projection
========================  =============================================  ==========================
``imagenet``              the val folder: 1000 wnid folders              wnid index / identity
``imagenet_v2``           folder holding ImageNetV2-matched-frequency    int(folder name) / identity
                          or imagenetv2-matched-frequency-format-val
``imagenet_sketch``       the ``sketch`` folder: 1000 wnid folders       wnid index / identity
``imagenet_r``            the imagenet-r folder: 200 wnid folders        0..199 / the 200 columns
``imagenet_a``            the imagenet-a folder: 200 wnid folders        0..199 / the 200 columns
``objectnet``             the objectnet-1.0 folder (with ``images/``)    0..112 / max over mapped
========================  =============================================  ==========================

The class lists and ObjectNet mappings are data files in ``metadata/`` (provenance in its
PROVENANCE.md). Layout problems raise ClipmergeError naming the root and the expected layout.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from clipmerge.data import eval_set
from clipmerge.data.eval_set import EvalSet
from clipmerge.data.images import load_image
from clipmerge.data.layouts import LAYOUTS
from clipmerge.errors import ClipmergeError

log = logging.getLogger(__name__)

METADATA = Path(__file__).parent / "metadata"
NUM_IMAGENET_CLASSES = 1000

# Image counts of the complete datasets (objectnet: the images of the 113 mapped classes, the ones scored).
FULL_COUNTS = {
    "imagenet": 50_000,
    "imagenet_v2": 10_000,
    "imagenet_r": 30_000,
    "imagenet_sketch": 50_889,
    "objectnet": 18_574,
    "imagenet_a": 7_500,
}
V2_FOLDERS = ("ImageNetV2-matched-frequency", "imagenetv2-matched-frequency-format-val")
OBJECTNET_FOLDERS = 313
OBJECTNET_BORDER = 2  # pixels cut from every side of an ObjectNet image (model-soups/wise-ft ``crop``)

class ImageFiles(Dataset):
    """Labelled image files, decoded with torchvision's loader (RGB PIL), optionally cut by a border.

    Args:
        samples: (path, label) pairs.
        transform: applied to the PIL image (after the border cut).
        border: pixels removed from each side before the transform (ObjectNet's 2-pixel crop).
    """

    def __init__(self, samples: Sequence[tuple[str, int]], transform=None, border: int = 0):
        self.samples = list(samples)
        self.transform = transform
        self.border = border

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image = load_image(path)
        if self.border:
            width, height = image.size
            image = image.crop((self.border, self.border, width - self.border, height - self.border))
        if self.transform is not None:
            image = self.transform(image)
        return image, label


# ---------------------------------------------------------------------------------------------
# Class lists and mappings (data files in metadata/)


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet wnids in class-index order (= sorted order)."""
    return tuple((METADATA / "imagenet_wnids.txt").read_text().split())


@functools.cache
def class_sublist(adapter: str) -> tuple[int, ...]:
    """The 200 ImageNet class indices of ImageNet-R or ImageNet-A (model-soups/wise-ft CLASS_SUBLIST)."""
    return tuple(int(i) for i in (METADATA / f"{adapter}_class_sublist.txt").read_text().split())


@functools.cache
def objectnet_classes() -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The 113 ObjectNet classes mapped to ImageNet, in label order (sorted folder names), each with the
    ImageNet class indices it maps to. Built from the four wise-ft metadata files as wise-ft does."""
    folder_of = {label: folder for folder, label in _json("folder_to_objectnet_label.json").items()}
    index_of_id = {imagenet_id: int(index) for index, imagenet_id in _json("pytorch_to_imagenet_2012_id.json").items()}
    lines = (METADATA / "imagenet_to_label_2012_v2").read_text().splitlines()
    # Line i names ImageNet 2012 id i. A name on two lines maps to the later one, as in wise-ft's dict.
    index_of_name = {name.strip(): index_of_id[i] for i, name in enumerate(lines)}
    mapped = {
        folder_of[objectnet_name]: tuple(index_of_name[name] for name in imagenet_names.split("; "))
        for objectnet_name, imagenet_names in _json("objectnet_to_imagenet_1k.json").items()
    }
    return tuple(sorted(mapped.items()))


@functools.cache
def objectnet_folders() -> frozenset[str]:
    """All 313 ObjectNet 1.0 folder names."""
    return frozenset(_json("folder_to_objectnet_label.json"))


def _json(name: str) -> dict:
    return json.loads((METADATA / name).read_text())


# ---------------------------------------------------------------------------------------------
# Projections from the head's 1000 logits


# The head's 1000 logits onto each set's label space (one implementation in eval_set.py).
identity_projection = eval_set.identity_projection(NUM_IMAGENET_CLASSES)
columns_projection = functools.partial(eval_set.columns_projection, head_width=NUM_IMAGENET_CLASSES)
max_projection = functools.partial(eval_set.max_projection, head_width=NUM_IMAGENET_CLASSES)


# ---------------------------------------------------------------------------------------------
# Folder scanning with clear errors


def _fail(adapter: str, root, problem: str) -> ClipmergeError:
    return ClipmergeError(f"{adapter}: {root}: {problem}; expected layout {LAYOUTS[adapter]}")


def _subfolders(adapter: str, root: Path) -> set[str]:
    if not root.is_dir():
        raise _fail(adapter, root, "folder not found")
    return {e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")}


def _check_folders(adapter: str, root: Path, found: set[str], expected: Sequence[str]) -> None:
    missing = sorted(set(expected) - found)
    unexpected = sorted(found - set(expected))
    if missing or unexpected:
        hint = ""
        for child in ("val", "sketch", "images", *V2_FOLDERS):
            if child in found:
                hint = f" (did you mean {root / child}?)"
        raise _fail(
            adapter, root,
            f"{len(missing)} of the {len(expected)} class folders are missing (e.g. {missing[:3]}) and "
            f"{len(unexpected)} folders are not classes of this set (e.g. {unexpected[:3]}){hint}",
        )


def _images_in(adapter: str, root: Path, folder: str) -> list[str]:
    files = sorted(
        e.path for e in os.scandir(root / folder) if e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS)
    )
    if not files:
        raise _fail(adapter, root, f"class folder {folder!r} holds no images")
    return files


def _scan(adapter: str, root: Path, label_of_folder: dict[str, int]) -> list[tuple[str, int]]:
    """(path, label) for every image of the given folders, sorted by label then path."""
    samples = []
    for folder, label in sorted(label_of_folder.items(), key=lambda fl: fl[1]):
        samples += [(path, label) for path in _images_in(adapter, root, folder)]
    return samples


def _log_count(adapter: str, root, n: int, num_classes: int) -> None:
    full = FULL_COUNTS[adapter]
    note = "" if n == full else f" (the complete dataset has {full:,})"
    log.info("%s: %d images in %d classes under %s%s", adapter, n, num_classes, root, note)


def _check_classnames(adapter: str, classnames: list[str] | None) -> None:
    if classnames is not None and len(classnames) != NUM_IMAGENET_CLASSES:
        raise ClipmergeError(
            f"{adapter}: the head has {len(classnames)} class names; this adapter needs the 1000 ImageNet classes"
        )


# ---------------------------------------------------------------------------------------------
# The adapters


def _wnid_set(adapter: str, root, transform, classnames, wnids: Sequence[str], project) -> EvalSet:
    """A set of wnid folders; labels follow ``wnids`` order, which is sorted, i.e. ImageFolder order."""
    _check_classnames(adapter, classnames)
    root = Path(root)
    _check_folders(adapter, root, _subfolders(adapter, root), wnids)
    samples = _scan(adapter, root, {wnid: i for i, wnid in enumerate(wnids)})
    _log_count(adapter, root, len(samples), len(wnids))
    return EvalSet(ImageFiles(samples, transform), project, len(wnids))


def imagenet(root, transform, classnames: list[str] | None = None) -> EvalSet:
    """ImageNet val as 1000 wnid folders; ``root`` is the val folder."""
    return _wnid_set("imagenet", root, transform, classnames, imagenet_wnids(), identity_projection)


def imagenet_sketch(root, transform, classnames: list[str] | None = None) -> EvalSet:
    """ImageNet-Sketch; ``root`` is its ``sketch`` folder of 1000 wnid folders."""
    return _wnid_set("imagenet_sketch", root, transform, classnames, imagenet_wnids(), identity_projection)


def _subset_of_imagenet(adapter: str, root, transform, classnames) -> EvalSet:
    columns = class_sublist(adapter)
    wnids = [imagenet_wnids()[i] for i in columns]
    return _wnid_set(adapter, root, transform, classnames, wnids, columns_projection(columns))


def imagenet_r(root, transform, classnames: list[str] | None = None) -> EvalSet:
    """ImageNet-R: 200 wnid folders, scored on their 200 columns of the head."""
    return _subset_of_imagenet("imagenet_r", root, transform, classnames)


def imagenet_a(root, transform, classnames: list[str] | None = None) -> EvalSet:
    """ImageNet-A: 200 wnid folders, scored on their 200 columns of the head."""
    return _subset_of_imagenet("imagenet_a", root, transform, classnames)


def imagenet_v2(root, transform, classnames: list[str] | None = None) -> EvalSet:
    """ImageNetV2 matched-frequency: folders ``0``..``999`` named by class index.

    ``root`` may hold ``ImageNetV2-matched-frequency`` (imagenetv2_pytorch's name) or
    ``imagenetv2-matched-frequency-format-val`` (the archive's name), or be that folder itself.
    Labels are ``int(folder)``; ImageFolder would sort the names as strings ("10" before "2").
    """
    adapter = "imagenet_v2"
    _check_classnames(adapter, classnames)
    root = Path(root)
    expected = [str(i) for i in range(NUM_IMAGENET_CLASSES)]
    folders = _subfolders(adapter, root)
    present = [name for name in V2_FOLDERS if name in folders]
    if len(present) > 1:
        raise _fail(adapter, root, f"holds both {present[0]} and {present[1]}; keep one")
    data = root / present[0] if present else root
    _check_folders(adapter, data, _subfolders(adapter, data), expected)
    samples = _scan(adapter, data, {name: int(name) for name in expected})
    _log_count(adapter, data, len(samples), NUM_IMAGENET_CLASSES)
    return EvalSet(ImageFiles(samples, transform), identity_projection, NUM_IMAGENET_CLASSES)


def objectnet(root, transform, classnames: list[str] | None = None) -> EvalSet:
    """ObjectNet 1.0: only the 113 classes mapped to ImageNet are scored.

    ``root`` is the ``objectnet-1.0`` folder. Labels index the mapped folders in sorted order; class k
    scores the max of the logits of its ImageNet classes; every image loses a 2-pixel border first.
    """
    adapter = "objectnet"
    _check_classnames(adapter, classnames)
    root = Path(root)
    images = root / "images"
    if "images" not in _subfolders(adapter, root):
        raise _fail(adapter, root, "no images/ folder")
    folders = _subfolders(adapter, images)
    unknown = sorted(folders - objectnet_folders())
    classes = objectnet_classes()
    missing = sorted({folder for folder, _ in classes} - folders)
    if unknown or missing:
        raise _fail(
            adapter, root,
            f"images/ has {len(unknown)} folders that are not ObjectNet classes (e.g. {unknown[:3]}) and "
            f"lacks {len(missing)} of the 113 classes mapped to ImageNet (e.g. {missing[:3]})",
        )
    if len(folders) < OBJECTNET_FOLDERS:
        log.warning("%s: images/ has %d of the %d ObjectNet folders", root, len(folders), OBJECTNET_FOLDERS)
    samples = _scan(adapter, images, {folder: k for k, (folder, _) in enumerate(classes)})
    _log_count(adapter, root, len(samples), len(classes))
    project = max_projection([ids for _, ids in classes])
    return EvalSet(ImageFiles(samples, transform, border=OBJECTNET_BORDER), project, len(classes))


IMAGENET_ADAPTERS: dict[str, Callable[..., EvalSet]] = {
    "imagenet": imagenet,
    "imagenet_v2": imagenet_v2,
    "imagenet_r": imagenet_r,
    "imagenet_sketch": imagenet_sketch,
    "objectnet": objectnet,
    "imagenet_a": imagenet_a,
}
