"""Training augmentation, seeded per sample so it is reproducible whatever the worker count.

The transform follows wise-ft's CLIP train preprocessing (clip/clip.py): RandomResizedCrop to the
model's input size with scale (crop_scale_min, 1.0) and bicubic interpolation, then CLIP mean/std
normalisation, with optional torchvision RandAugment in between (model-soups' sweep used timm's
``rand-mM-nN``; torchvision's magnitude runs 0-30 instead of timm's 0-10, so "m9" is not the same
strength). No horizontal flip, as in wise-ft.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode, v2

from clipmerge.training.recipe import Recipe
from clipmerge.training.streams import AUGMENT, derive_seed


def train_transform(cfg: dict, recipe: Recipe) -> v2.Compose:
    """PIL image -> normalised float tensor under the weights' preprocess config ``cfg``
    (clipmerge.models.clip.checkpoint_preprocess), with the recipe's random crop and RandAugment."""
    steps = [
        v2.RandomResizedCrop(
            cfg["size"],
            scale=(recipe.crop_scale_min, 1.0),
            interpolation=InterpolationMode(cfg["interpolation"]),
            antialias=True,
        )
    ]
    if recipe.randaugment_ops > 0:
        steps.append(v2.RandAugment(num_ops=recipe.randaugment_ops, magnitude=recipe.randaugment_magnitude))
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg["mean"], cfg["std"])]
    return v2.Compose(steps)


class SeededAugmentation(Dataset):
    """Wraps a dataset of (PIL image, label); key (epoch, index) gives that sample's augmented view.

    torchvision's random transforms draw from torch's global CPU generator, so each sample reseeds it
    from (seed, epoch, index) inside ``fork_rng``: the caller's RNG state is left as it was.
    """

    def __init__(self, dataset: Dataset, transform, seed: int):
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        image, label = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(derive_seed(self.seed, AUGMENT, epoch, index))
            return self.transform(image), label
