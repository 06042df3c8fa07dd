"""model-soups' held-out mask (imagenet_98_idxs.npy) as the held-out split, and its sanity check."""

import numpy as np
import pytest

from clipmerge.cli import main
from clipmerge.data.splits import IMAGENET_TRAIN_SIZE, heldout_from_mask, load_mask, read_split
from clipmerge.errors import ClipmergeError


def imagenet_train_names(heldout_name: str) -> tuple[list[str], np.ndarray]:
    """1,281,167 relative paths in ImageFolder order and a 26-per-class-like mask whose held-out
    sample 1000 is ``heldout_name`` (model-soups' check is about exactly this position)."""
    names = [f"n{c:08d}/n{c:08d}_{i}.JPEG" for c in range(1000) for i in range(1282)][:IMAGENET_TRAIN_SIZE]
    mask = np.zeros(IMAGENET_TRAIN_SIZE, dtype=np.float64)  # model-soups made it with np.zeros (float)
    mask[::50] = 1
    held = np.flatnonzero(mask)
    names[held[1000]] = heldout_name
    return names, mask


def test_the_full_imagenet_mask_passes_model_soups_check():
    names, mask = imagenet_train_names("n01675722/n01675722_4108.JPEG")
    chosen = heldout_from_mask(names, mask, "idxs.npy")
    assert len(chosen) == int(mask.sum()) and chosen[1000] == "n01675722/n01675722_4108.JPEG"


def test_a_folder_the_mask_was_not_made_for_fails_the_check():
    names, mask = imagenet_train_names("n01675722/n01675722_9999.JPEG")
    with pytest.raises(ClipmergeError, match="held-out sample 1000 is 'n01675722/n01675722_9999.JPEG', "
                                             "model-soups' check expects n01675722_4108.JPEG"):
        heldout_from_mask(names, mask, "idxs.npy")


def test_a_mask_of_another_length_is_refused():
    with pytest.raises(ClipmergeError, match="the mask has 3 entries, the training folder 4 images"):
        heldout_from_mask(["a/1", "a/2", "b/1", "b/2"], np.array([1, 0, 1]), "idxs.npy")


def test_split_heldout_reads_the_mask_in_imagefolder_order(tmp_path, image_folder):
    mask = np.zeros(18)  # image_folder: cat, dog, fox x 000..005.png
    mask[[1, 6, 17]] = 1
    np.save(tmp_path / "idxs.npy", mask)
    out = tmp_path / "heldout.txt"
    assert main(["split-heldout", "--train-root", str(image_folder), "--mask", str(tmp_path / "idxs.npy"),
                 "--out", str(out)]) == 0
    assert read_split(out) == {"cat/001.png", "dog/000.png", "fox/005.png"}  # sorted classes, sorted files


@pytest.mark.parametrize("content,message", [
    (np.array([[0, 1]]), "expected a 1-D array of 0/1"),
    (np.array([0, 2]), "expected a 1-D array of 0/1"),
    (np.array([{"a": 1}], dtype=object), "not a readable .npy mask"),  # would need allow_pickle
])
def test_bad_masks_name_the_file(tmp_path, content, message):
    path = tmp_path / "idxs.npy"
    np.save(path, content, allow_pickle=True)
    with pytest.raises(ClipmergeError, match=message) as error:
        load_mask(path)
    assert str(path) in str(error.value)
