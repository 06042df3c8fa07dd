"""The held-out split: a fixed, seeded per-class sample of the training set, or model-soups' own
ImageNet2p mask (:func:`heldout_from_mask`).

Fine-tuning trains on the training folder *minus* these files; only greedy soup reads them. The split
is a file of paths relative to the training root, one per line, so it is an explicit DAG output.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset, Subset
from torchvision.datasets import ImageFolder

from clipmerge.data.images import load_image
from clipmerge.errors import ClipmergeError
from clipmerge.files import atomic_write


def image_folder(root, transform=None) -> ImageFolder:
    """torchvision ImageFolder with a clear error for a missing or empty folder."""
    if not Path(root).is_dir():
        raise ClipmergeError(f"{root}: dataset folder not found (expected <root>/<class>/<image>)")
    try:
        return ImageFolder(str(root), transform=transform, loader=load_image)
    except (FileNotFoundError, RuntimeError) as e:
        raise ClipmergeError(f"{root}: not an image folder with one sub-folder per class ({e})") from e


def relative_paths(dataset: ImageFolder) -> list[str]:
    root = Path(dataset.root)
    return [Path(path).relative_to(root).as_posix() for path, _ in dataset.samples]


def choose_heldout(dataset: ImageFolder, per_class: int, seed: int) -> list[str]:
    """``per_class`` files of every class, drawn with ``seed``; sorted so the file is stable."""
    by_class: dict[int, list[str]] = {}
    for rel, (_, label) in zip(relative_paths(dataset), dataset.samples, strict=True):
        by_class.setdefault(label, []).append(rel)
    rng = random.Random(seed)
    chosen = []
    for label, files in sorted(by_class.items()):
        if len(files) <= per_class:
            name = dataset.classes[label]
            raise ClipmergeError(
                f"{dataset.root}: class {name!r} has {len(files)} images, cannot hold out {per_class} "
                "and still train on it"
            )
        chosen.extend(rng.sample(sorted(files), per_class))
    return sorted(chosen)


# model-soups' imagenet_98_idxs.npy: a 0/1 mask over torchvision ImageFolder's order of ImageNet-train,
# 1 = held out (datasets/imagenet.py: ImageNet2p samples np.where(idxs)[0], ImageNet98p 1 - idxs). Its
# fine-tunes trained on the zeros, so a held-out split of our own would contain their training images.
IMAGENET_TRAIN_SIZE = 1_281_167
# model-soups' sanity check (utils.py): the 1000th held-out sample is this file, on the real data.
MODEL_SOUPS_SAMPLE = (1000, "n01675722_4108.JPEG")


def load_mask(path) -> np.ndarray:
    """A 0/1 held-out mask from a .npy file, read without unpickling anything."""
    try:
        mask = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ClipmergeError(f"{path}: not a readable .npy mask ({e})") from e
    if mask.ndim != 1 or not np.isin(mask, (0, 1)).all():
        raise ClipmergeError(f"{path}: expected a 1-D array of 0/1 (1 = held out), got shape {mask.shape}")
    return mask


def heldout_from_mask(relative: list[str], mask: np.ndarray, source, *,
                      full_size: int = IMAGENET_TRAIN_SIZE, sample=MODEL_SOUPS_SAMPLE) -> list[str]:
    """The files (in the training folder's ImageFolder order) the mask holds out. On the full ImageNet
    train set (``full_size`` images), model-soups' own check must pass: held-out ``sample[0]`` is
    ``sample[1]``, or the folder is not the one the mask was made for."""
    if len(mask) != len(relative):
        raise ClipmergeError(f"{source}: the mask has {len(mask)} entries, the training folder {len(relative)} "
                             "images; it is a mask of another training set")
    chosen = [rel for rel, held in zip(relative, mask, strict=True) if held]
    index, name = sample
    if len(relative) == full_size and not (len(chosen) > index and chosen[index].endswith(name)):
        found = chosen[index] if len(chosen) > index else None
        raise ClipmergeError(f"{source}: held-out sample {index} is {found!r}, model-soups' check expects {name}; "
                             "the training folder's files or order differ from the ones the mask was made for")
    return chosen


def write_split(paths: list[str], out) -> None:
    atomic_write(out, lambda tmp: Path(tmp).write_text("".join(f"{p}\n" for p in paths)))


def read_split(path) -> set[str]:
    if not Path(path).is_file():
        raise ClipmergeError(f"{path}: held-out split file not found")
    return {line.strip() for line in Path(path).read_text().splitlines() if line.strip()}


def _subset(dataset: ImageFolder, split_file, keep_heldout: bool) -> Subset:
    heldout = read_split(split_file)
    rel = relative_paths(dataset)
    unknown = heldout - set(rel)
    if unknown:
        raise ClipmergeError(
            f"{split_file}: {len(unknown)} held-out files are not in {dataset.root} (e.g. {sorted(unknown)[0]})"
        )
    indices = [i for i, r in enumerate(rel) if (r in heldout) == keep_heldout]
    return Subset(dataset, indices)


def training_set(root, split_file, transform=None) -> Subset:
    """The training folder without the held-out files."""
    return _subset(image_folder(root, transform), split_file, keep_heldout=False)


def heldout_set(root, split_file, transform=None) -> Subset:
    """Only the held-out files of the training folder."""
    return _subset(image_folder(root, transform), split_file, keep_heldout=True)


class Transformed(Dataset):
    """``dataset``'s (image, label) items with ``transform`` applied to the image."""

    def __init__(self, dataset: Dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return self.transform(image), label
