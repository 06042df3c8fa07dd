"""Shared fixtures: tiny real open_clip models and tiny ImageFolder trees (no mocks, no downloads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread per test (two spin against each other on a shared 2-core machine); an
    in-process CLI run that changes it is undone afterwards."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


def write_image_folder(root, classes, per_class, size=32, seed=0):
    """Random RGB PNGs in <root>/<class>/<i>.png; each class gets its own mean colour so it is learnable."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        base = np.array([40 + 50 * c % 200, 200 - 30 * c % 180, 60 + 70 * c % 190])
        for i in range(per_class):
            pixels = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path):
    return write_image_folder(tmp_path / "images", ["cat", "dog", "fox"], per_class=6)


@pytest.fixture(scope="session")
def tiny_clip_file(tmp_path_factory):
    """A randomly initialised clipmerge-tiny CLIP saved like the pretrained stage saves it."""
    from clipmerge.models.clip import create_clip, save_clip

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pretrained") / "model.safetensors"
    save_clip(create_clip("clipmerge-tiny"), path, "clipmerge-tiny", "random")
    return path


@pytest.fixture(scope="session")
def imagenet_roots(tmp_path_factory):
    """Tiny copies of ImageNet val and its five shifts in their real layouts (fixtures/imagenet_layouts.py)."""
    from fixtures import imagenet_layouts as layouts

    base = tmp_path_factory.mktemp("imagenet_layouts")
    return {
        "imagenet": layouts.build_imagenet_val(base / "imagenet" / "val"),
        "imagenet_v2": layouts.build_imagenet_v2(base / "imagenetv2"),
        "imagenet_sketch": layouts.build_imagenet_sketch(base / "sketch"),
        "imagenet_r": layouts.build_subset(base / "imagenet-r", "imagenet_r"),
        "imagenet_a": layouts.build_subset(base / "imagenet-a", "imagenet_a"),
        "objectnet": layouts.build_objectnet(base / "objectnet-1.0"),
    }
