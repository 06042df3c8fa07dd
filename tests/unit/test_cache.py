"""The preprocessed-image cache: exact round trip, reuse by fingerprint, atomic file, clear errors."""

import pytest
import torch
from safetensors.torch import save_file
from torchvision import transforms as T

from clipmerge.data import cache
from clipmerge.data.splits import image_folder, relative_paths
from clipmerge.errors import ClipmergeError
from clipmerge.models.clip import eval_transform, preprocess_cfg
from fixtures import imagenet_layouts as layouts

WNIDS = ["n01440764", "n01443537", "n01484850"]


@pytest.fixture(scope="module")
def train_root(tmp_path_factory):
    return layouts.build_imagenet_train(tmp_path_factory.mktemp("train") / "train", WNIDS, per_class=5)


@pytest.fixture(scope="module")
def transform():
    return eval_transform(preprocess_cfg("clipmerge-tiny"))  # resize 32 (bicubic) + centre crop + CLIP mean/std


def build(path, root, transform, make=None):
    folder = image_folder(root)
    return cache.load_or_build(
        path, make or (lambda t: image_folder(root, t)),
        sample_ids=relative_paths(folder), labels=folder.targets, transform=transform, batch_size=4,
    )


def all_batches(image_cache, batch_size=4):
    images, labels = zip(*image_cache.batches(batch_size, torch.device("cpu")), strict=True)
    return torch.cat(images), torch.cat(labels)


def test_split_normalize_keeps_everything_before_normalize(transform):
    pre, normalize = cache.split_normalize(transform)
    assert isinstance(normalize, T.Normalize) and normalize is transform.transforms[-1]
    assert [type(t) for t in pre.transforms[:-1]] == [type(t) for t in transform.transforms[:-1]]
    again = eval_transform(preprocess_cfg("clipmerge-tiny"))
    assert repr(pre) == repr(cache.split_normalize(again)[0])  # stable fingerprint


def test_split_normalize_needs_a_final_normalize():
    with pytest.raises(ClipmergeError, match="ending in Normalize"):
        cache.split_normalize(T.Compose([T.ToTensor()]))


@pytest.mark.parametrize("on_disk", [True, False])
def test_cached_batches_equal_the_transform_output(train_root, transform, tmp_path, on_disk):
    direct = image_folder(train_root, transform)
    expected = torch.stack([direct[i][0] for i in range(len(direct))])
    with build(tmp_path / "heldout.safetensors" if on_disk else None, train_root, transform) as image_cache:
        assert len(image_cache) == 15
        images, labels = all_batches(image_cache)
    # uint8 holds exactly what ToTensor saw, and normalising repeats Normalize's arithmetic.
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-6)
    assert labels.tolist() == direct.targets


def test_cache_file_is_uint8_and_written_atomically(train_root, transform, tmp_path):
    path = tmp_path / "heldout.safetensors"
    build(path, train_root, transform).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heldout.safetensors"]  # no temp file left
    with cache.open_cache(path) as image_cache:
        assert image_cache.images.get_dtype() == "U8" and image_cache.images.get_shape() == [15, 3, 32, 32]
    assert path.stat().st_size < 15 * 3 * 32 * 32 + 1024  # pixels as bytes, plus the header


def test_a_matching_cache_is_reused(train_root, transform, tmp_path):
    path = tmp_path / "heldout.safetensors"
    build(path, train_root, transform).close()

    def must_not_decode(_):
        raise AssertionError("the cache should have been reused")

    with build(path, train_root, transform, make=must_not_decode) as image_cache:
        assert len(image_cache) == 15


def test_a_cache_of_other_files_or_transform_is_rebuilt(train_root, transform, tmp_path):
    path = tmp_path / "heldout.safetensors"
    build(path, train_root, transform).close()
    before = cache.cache_fingerprint(path)
    other = T.Compose([T.Resize(16), T.CenterCrop(16), T.ToTensor(), transform.transforms[-1]])
    with build(path, train_root, other) as image_cache:
        assert image_cache.images.get_shape() == [15, 3, 16, 16]
    assert cache.cache_fingerprint(path) not in (None, before)


def test_fingerprint_depends_on_files_labels_and_transform(transform):
    pre, normalize = cache.split_normalize(transform)
    key = cache.fingerprint(["a/1.JPEG", "b/2.JPEG"], [0, 1], pre, normalize)
    assert key == cache.fingerprint(["a/1.JPEG", "b/2.JPEG"], [0, 1], pre, normalize)
    assert key != cache.fingerprint(["a/1.JPEG", "b/3.JPEG"], [0, 1], pre, normalize)
    assert key != cache.fingerprint(["a/1.JPEG", "b/2.JPEG"], [0, 0], pre, normalize)
    assert key != cache.fingerprint(["a/1.JPEG", "b/2.JPEG"], [0, 1], pre, T.Normalize([0.5] * 3, [0.5] * 3))


def test_other_files_are_not_caches(tmp_path):
    weights = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, str(weights))
    assert cache.cache_fingerprint(weights) is None
    assert cache.cache_fingerprint(tmp_path / "missing.safetensors") is None
    with pytest.raises(ClipmergeError, match="not a clipmerge image cache"):
        cache.open_cache(weights)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not safetensors")
    with pytest.raises(ClipmergeError, match="unreadable image cache"):
        cache.open_cache(garbage)


def test_empty_dataset_is_refused():
    with pytest.raises(ClipmergeError, match="empty dataset"):
        cache.preprocess([])


def test_transform_must_yield_uint8(train_root):
    with pytest.raises(ClipmergeError, match="uint8"):
        cache.preprocess(image_folder(train_root, T.Compose([T.Resize(8), T.CenterCrop(8), T.ToTensor()])))
