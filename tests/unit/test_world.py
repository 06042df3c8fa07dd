"""The demo world: determinism, layout, manifest, captions, and that every shift really is a shift."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipmerge.errors import ClipmergeError
from clipmerge.world import generate
from clipmerge.world.captions import TEMPLATES
from clipmerge.world.generate import MANIFEST, WorldConfig, image_rng, write_world
from clipmerge.world.render import to_png_image
from clipmerge.world.shapes import CLASSES
from clipmerge.world.splits import SPLITS
from clipmerge.world.styles import STYLES, TYPICAL_COLOUR

TINY = WorldConfig(seed=0, image_size=32, pretrain=12, train_per_class=2, test_per_class=1, shift_per_class=1)


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    write_world(out, TINY, progress=False)
    return out


@pytest.fixture(scope="module")
def manifest(world) -> dict:
    return json.loads((world / MANIFEST).read_text())


def test_classes_are_ten_sorted_folder_safe_words():
    assert len(CLASSES) == 10
    assert list(CLASSES) == sorted(CLASSES)
    assert all(re.fullmatch(r"[a-z]+", c) for c in CLASSES)


def test_same_seed_gives_identical_bytes(world, tmp_path):
    write_world(tmp_path / "again", TINY, progress=False)
    assert files(tmp_path / "again") == files(world)


def test_different_seed_gives_different_images(world, tmp_path):
    write_world(tmp_path / "other", WorldConfig(**{**TINY.__dict__, "seed": 1}), progress=False)
    theirs, ours = files(tmp_path / "other"), files(world)
    assert theirs.keys() == ours.keys()
    pngs = [name for name in ours if name.endswith(".png")]
    assert all(theirs[name] != ours[name] for name in pngs)


def test_splits_do_not_depend_on_each_others_sizes(world, tmp_path):
    bigger = WorldConfig(**{**TINY.__dict__, "pretrain": 15, "train_per_class": 3})
    write_world(tmp_path / "bigger", bigger, progress=False)
    theirs, ours = files(tmp_path / "bigger"), files(world)
    # Growing a split appends images; the other splits and the existing images stay byte-identical.
    captions = "pretrain/captions.tsv"
    assert all(theirs[name] == data for name, data in ours.items() if name not in (MANIFEST, captions))
    assert theirs[captions].startswith(ours[captions])
    assert len(theirs) == len(ours) + 3 + len(CLASSES)


def test_manifest_lists_sorted_classes_and_counts_equal_to_files(world, manifest):
    assert manifest["classes"] == list(CLASSES)
    assert manifest["seed"] == 0 and manifest["image_size"] == 32 and manifest["version"] == generate.VERSION
    assert set(manifest["splits"]) == {"pretrain", "train", "test", "v2", "r", "sketch", "objectnet", "a"}
    for name, split in manifest["splits"].items():
        on_disk = list((world / name).rglob("*.png"))
        assert split["n"] == len(on_disk), name
        assert split["description"] and split["style"]


def test_class_folders_are_balanced_and_shifts_hold_only_their_subset(world, manifest):
    for split in SPLITS[1:]:
        entry = manifest["splits"][split.name]
        folders = sorted(p.name for p in (world / split.name).iterdir())
        assert folders == entry["classes"] == list(split.classes) == sorted(split.classes)
        assert set(folders) <= set(CLASSES)
        counts = {c: len(list((world / split.name / c).glob("*.png"))) for c in folders}
        assert set(counts.values()) == {entry["per_class"]}, split.name
    subsets = {name: len(manifest["splits"][name]["classes"]) for name in ("r", "objectnet", "a")}
    assert subsets == {"r": 6, "objectnet": 7, "a": 6}


def test_images_are_rgb_pngs_of_the_requested_size(world):
    for path in [world / "pretrain" / "images" / "000000.png", world / "sketch" / "star" / "000000.png"]:
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", (32, 32))


def test_captions_name_their_class_and_fit_the_text_context(world):
    lines = (world / "pretrain" / "captions.tsv").read_text().splitlines()
    assert len(lines) == TINY.pretrain
    for i, line in enumerate(lines):
        name, text = line.split("\t")
        assert name == f"{i:06d}.png" and (world / "pretrain" / "images" / name).is_file()
        words = text.rstrip(".").split()
        assert CLASSES[i % len(CLASSES)] in words
        assert len(words) <= 12


def test_captions_fit_the_tiny_clip_context_untruncated():
    tokenizer = pytest.importorskip("open_clip.tokenizer").SimpleTokenizer()
    configs = Path(generate.__file__).parents[1] / "models" / "model_configs"
    config = json.loads((configs / "clipmerge-tiny.json").read_text())
    texts = [generate.pretrain_example(WorldConfig(), i)[2] for i in range(300)] + list(TEMPLATES)
    longest = max(len(tokenizer.encode(text.format("triangle"))) + 2 for text in texts)  # + start, end
    assert longest <= config["text_cfg"]["context_length"]


def test_templates_file_matches_manifest(world, manifest):
    assert (world / "templates.txt").read_text().splitlines() == manifest["templates"] == list(TEMPLATES)
    assert all("{}" in t for t in TEMPLATES)


def test_pretraining_covers_every_style():
    config = WorldConfig(pretrain=200)
    styles = {generate.pretrain_example(config, i)[1].style for i in range(60)}
    assert styles == {"photo", "rendition", "sketch", "pose", "clutter"}


# --- each shift differs measurably from the in-distribution photos ------------------------------


def sample(style: str, n: int = 60) -> list:
    """``n`` images (uint8 arrays as floats in [0, 1]) and scenes of ``style``, classes cycling."""
    out = []
    for i in range(n):
        image, scene = STYLES[style](image_rng(123, 99, i), CLASSES[i % len(CLASSES)], 32)
        out.append((np.asarray(to_png_image(image), np.float32) / 255.0, scene))
    return out


@pytest.fixture(scope="module")
def photos() -> list:
    return sample("photo", 100)


def saturation(image: np.ndarray) -> float:
    return float((image.max(axis=2) - image.min(axis=2)).mean())


def strong_edges(image: np.ndarray) -> float:
    """Fraction of neighbouring pixel pairs whose grey level jumps by more than 0.15."""
    grey = image.mean(axis=2)
    return float(np.mean([(np.abs(np.diff(grey, axis=k)) > 0.15).mean() for k in (0, 1)]))


def border_roughness(image: np.ndarray, width: int = 3) -> float:
    """Mean absolute neighbour difference in the outer frame, where the background shows."""
    frame = np.zeros(image.shape[:2], bool)
    frame[:width], frame[-width:], frame[:, :width], frame[:, -width:] = True, True, True, True
    dx = np.abs(np.diff(image, axis=1))[frame[:, 1:]]
    dy = np.abs(np.diff(image, axis=0))[frame[1:]]
    return float((dx.mean() + dy.mean()) / 2)


def mean(values) -> float:
    return float(np.mean(list(values)))


def test_sketch_has_no_colour(photos):
    assert max(saturation(image) for image, _ in sample("sketch")) == 0.0
    assert mean(saturation(image) for image, _ in photos) > 0.1


def test_renditions_are_flat(photos):
    def colours(image):
        return len(np.unique(image.reshape(-1, 3), axis=0))

    assert mean(colours(image) for image, _ in sample("rendition")) < 0.2 * mean(colours(i) for i, _ in photos)


def test_objectnet_backgrounds_are_loud_and_colour_carries_no_class_cue(photos):
    poses = sample("pose")
    assert mean(border_roughness(i) for i, _ in poses) > 2 * mean(border_roughness(i) for i, _ in photos)
    assert mean(s.colour == TYPICAL_COLOUR[s.cls] for _, s in poses) < 0.25
    assert mean(s.colour == TYPICAL_COLOUR[s.cls] for _, s in photos) > 0.35


def test_a_objects_are_small_cluttered_and_wrongly_coloured(photos):
    hard = sample("clutter")
    assert mean(s.radius for _, s in hard) < 0.7 * mean(s.radius for _, s in photos)
    assert mean(strong_edges(i) for i, _ in hard) > 1.3 * mean(strong_edges(i) for i, _ in photos)
    assert not any(s.colour == TYPICAL_COLOUR[s.cls] for _, s in hard)


def test_v2_drift_is_mild(photos):
    drifted = sample("photo_drift", 100)
    radius_ratio = mean(s.radius for _, s in drifted) / mean(s.radius for _, s in photos)
    assert 0.8 < radius_ratio < 0.97  # smaller objects, but the same kind of images
    assert mean(strong_edges(i) for i, _ in drifted) < 0.9 * mean(strong_edges(i) for i, _ in photos)
    ratio = mean(saturation(i) for i, _ in drifted) / mean(saturation(i) for i, _ in photos)
    assert 0.8 < ratio < 1.2


# --- output directory safety ----------------------------------------------------------------


def test_refuses_an_out_path_that_is_not_a_world(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(ClipmergeError, match="notes.*not a world"):
        write_world(tmp_path / "notes", TINY, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ClipmergeError, match="not a directory"):
        write_world(tmp_path / "file", TINY, progress=False)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_a_failed_run_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    calls = iter(range(1000))

    def fail_after_a_few(*args):
        if next(calls) == 5:
            raise RuntimeError("killed")
        return original(*args)

    original = generate.folder_example
    monkeypatch.setattr(generate, "folder_example", fail_after_a_few)
    with pytest.raises(RuntimeError, match="killed"):
        write_world(tmp_path / "w", TINY, progress=False)
    assert list(tmp_path.iterdir()) == []
