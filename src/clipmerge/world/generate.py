"""Write a whole world to disk: image folders, pre-training captions, templates and world.json.

Every image has its own random stream, derived from (seed, split stream, class, index) with
numpy's SeedSequence, so a world is a pure function of its configuration, and changing one
split's size neither changes the other splits nor the images already in that split.

The world is written into a hidden sibling directory, world.json last, and renamed into place at
the end: a killed run leaves no directory that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from clipmerge import layout
from clipmerge.errors import ClipmergeError
from clipmerge.world.captions import TEMPLATES, caption
from clipmerge.world.render import to_png_image
from clipmerge.world.shapes import CLASSES
from clipmerge.world.splits import PRETRAIN_MIX, SPLITS, Split
from clipmerge.world.styles import STYLES, Scene

GENERATOR = "clipmerge.world"
VERSION = 1  # bump whenever the same configuration would give different bytes
MANIFEST = layout.WORLD_MANIFEST
TEMPLATES_FILE = layout.WORLD_TEMPLATES
MARKER = ".clipmerge-world"  # not a declared output: Snakemake never deletes it
CAPTIONS_FILE = "captions.tsv"


@dataclass(frozen=True)
class WorldConfig:
    """Everything that defines a world. Counts are per class except ``pretrain`` (total)."""

    seed: int = 0
    image_size: int = 32
    pretrain: int = 6000
    train_per_class: int = 200
    test_per_class: int = 50
    shift_per_class: int = 50

    def per_class(self, split: Split) -> int:
        """Images per class of a class-folder split."""
        return {"train": self.train_per_class, "test": self.test_per_class}.get(split.role, self.shift_per_class)

    def size_of(self, split: Split) -> int:
        """Number of images in ``split``."""
        return self.pretrain if split.role == "pretrain" else self.per_class(split) * len(split.classes)


def image_rng(seed: int, *key: int) -> np.random.Generator:
    """The random stream of one image, identified by ``key`` = (split stream, [class,] index)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def pretrain_example(config: WorldConfig, index: int) -> tuple[np.ndarray, Scene, str]:
    """Pre-training image ``index``: classes cycle (balanced), the style is drawn from PRETRAIN_MIX."""
    rng = image_rng(config.seed, SPLITS[0].stream, index)
    styles = list(PRETRAIN_MIX)
    style = styles[int(rng.choice(len(styles), p=list(PRETRAIN_MIX.values())))]
    image, scene = STYLES[style](rng, CLASSES[index % len(CLASSES)], config.image_size)
    return image, scene, caption(scene, rng)


def folder_example(config: WorldConfig, split: Split, cls: str, index: int) -> tuple[np.ndarray, Scene]:
    """Image ``index`` of class ``cls`` in a class-folder split."""
    rng = image_rng(config.seed, split.stream, CLASSES.index(cls), index)
    return STYLES[split.style](rng, cls, config.image_size)


def _save_png(image: np.ndarray, path: Path) -> None:
    to_png_image(image).save(path, format="PNG")


def _write_pretrain(root: Path, config: WorldConfig, bar: tqdm) -> None:
    images = root / "images"
    images.mkdir(parents=True)
    lines = []
    for i in range(config.pretrain):
        image, _, text = pretrain_example(config, i)
        name = f"{i:06d}.png"
        _save_png(image, images / name)
        lines.append(f"{name}\t{text}\n")
        bar.update()
    (root / CAPTIONS_FILE).write_text("".join(lines))


def _write_folders(root: Path, config: WorldConfig, split: Split, bar: tqdm) -> None:
    for cls in split.classes:
        folder = root / cls
        folder.mkdir(parents=True)
        for i in range(config.per_class(split)):
            _save_png(folder_example(config, split, cls, i)[0], folder / f"{i:06d}.png")
            bar.update()


def manifest(config: WorldConfig) -> dict:
    """The world.json content: classes in head order, per-split counts, styles and descriptions."""
    splits = {}
    for split in SPLITS:
        entry = {
            "n": config.size_of(split),
            "classes": list(split.classes),
            "role": split.role,
            "style": split.style,
            "mirrors": split.mirrors,
            "description": split.description,
        }
        if split.role == "pretrain":
            entry.update(captions=f"{split.name}/{CAPTIONS_FILE}", style_mix=PRETRAIN_MIX)
        else:
            entry["per_class"] = config.per_class(split)
        splits[split.name] = entry
    return {
        "generator": GENERATOR,
        "version": VERSION,
        "seed": config.seed,
        "image_size": config.image_size,
        "classes": list(CLASSES),
        "templates": list(TEMPLATES),
        "templates_file": TEMPLATES_FILE,
        "splits": splits,
    }


def is_world(path: Path) -> bool:
    """Whether ``path`` holds a world written by this generator: its manifest, or its marker, which
    stays when Snakemake deletes the declared outputs (world.json, templates.txt) before a rerun."""
    try:
        if (path / MARKER).read_text().strip() == GENERATOR:
            return True
    except OSError:
        pass
    try:
        return json.loads((path / MANIFEST).read_text()).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def check_out(out: Path) -> None:
    """Refuse an output path that exists and is not an empty directory or a previous world."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ClipmergeError(f"--out {out}: exists and is not a directory")
    if any(out.iterdir()) and not is_world(out):
        raise ClipmergeError(
            f"--out {out}: exists and is not a world written by make-world (no valid {MANIFEST}); "
            "refusing to overwrite it: delete it or choose another --out"
        )


def _publish(staging: Path, out: Path) -> None:
    """Move the finished world to ``out``, replacing a previous world there."""
    if out.exists() and any(out.iterdir()):
        # rename(2) cannot replace a non-empty directory: move the old world aside first.
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old)
    else:
        os.replace(staging, out)


def write_world(out: str | os.PathLike, config: WorldConfig, progress: bool = True) -> dict:
    """Generate the world described by ``config`` into directory ``out``.

    Args:
        out: destination directory; must not exist, be empty, or hold a previous world (replaced).
        config: seed, image size and split sizes (all counts >= 1).
        progress: show a tqdm progress bar over the images.

    Returns:
        The manifest written to ``out/world.json``.

    Raises:
        ClipmergeError: ``out`` exists and is something else than an empty directory or a world.
    """
    out = Path(out)
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the world is a normal shared directory
        total = sum(config.size_of(split) for split in SPLITS)
        with tqdm(total=total, unit="img", desc="make-world", disable=not progress, mininterval=1.0) as bar:
            for split in SPLITS:
                if split.role == "pretrain":
                    _write_pretrain(staging / split.name, config, bar)
                else:
                    _write_folders(staging / split.name, config, split, bar)
        (staging / TEMPLATES_FILE).write_text("".join(f"{t}\n" for t in TEMPLATES))
        (staging / MARKER).write_text(GENERATOR + "\n")
        content = manifest(config)
        (staging / MANIFEST).write_text(json.dumps(content, indent=2) + "\n")  # last: marks completion
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return content
