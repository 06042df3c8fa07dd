"""ImageNet and its five shifts: class lists, label spaces, projections, layouts and errors.

The fixtures are tiny copies of each dataset in its real layout with the real folder names (built once
per session); every image encodes its ImageNet class, so a colour-decoding stand-in model scores 100%
exactly when labels and projections agree.
"""

import logging
import shutil
from pathlib import Path

import open_clip
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import transforms as T

from clipmerge.data import imagenet
from clipmerge.data.eval_sets import ADAPTERS, build_eval_set
from clipmerge.errors import ClipmergeError
from clipmerge.evaluation.predict import predict, topk_accuracy
from fixtures import imagenet_layouts as layouts

TO_TENSOR = T.ToTensor()


@pytest.fixture(scope="session")
def roots(imagenet_roots) -> dict[str, Path]:
    return imagenet_roots


def accuracy(eval_set) -> float:
    loader = DataLoader(eval_set.dataset, batch_size=500)
    logits, labels = predict(layouts.ColourDecoder(), loader, torch.device("cpu"), eval_set.project)
    assert logits.shape[1] == eval_set.num_classes
    return topk_accuracy(logits, labels, ks=(1,))[1]


# --- class lists and mappings -------------------------------------------------------------------


def test_wnids_are_the_1000_sorted_imagenet_classes():
    wnids = imagenet.imagenet_wnids()
    assert len(set(wnids)) == 1000 and list(wnids) == sorted(wnids)
    assert (wnids[0], wnids[1], wnids[999]) == ("n01440764", "n01443537", "n15075141")


@pytest.mark.parametrize(("adapter", "head", "first_wnid"), [
    ("imagenet_r", [1, 2, 4, 6, 8, 9, 11, 13], "n01443537"),
    ("imagenet_a", [6, 11, 13, 15, 17, 22, 23, 27], "n01498041"),
])
def test_r_and_a_sublists(adapter, head, first_wnid):
    columns = imagenet.class_sublist(adapter)
    assert len(set(columns)) == 200 and list(columns) == sorted(columns) and columns[-1] == 988
    assert list(columns[:8]) == head
    assert imagenet.imagenet_wnids()[columns[0]] == first_wnid


def test_objectnet_maps_113_classes_to_125_imagenet_classes():
    classes = imagenet.objectnet_classes()
    folders = [folder for folder, _ in classes]
    ids = [i for _, group in classes for i in group]
    assert len(classes) == 113 and folders == sorted(folders)
    assert len(ids) == len(set(ids)) == 125
    assert len(imagenet.objectnet_folders()) == 313
    # Cross-check against open_clip's independent class-name list.
    names = open_clip.IMAGENET_CLASSNAMES
    groups = dict(classes)
    assert [names[i] for i in groups["alarm_clock"]] == ["analog clock", "digital clock"]
    assert [names[i] for i in groups["banana"]] == ["banana"]
    assert [names[i] for i in groups["chair"]] == ["barber chair", "folding chair", "rocking chair"]
    assert [names[i] for i in groups["still_camera"]] == ["Polaroid camera", "reflex camera"]


# --- projections ----------------------------------------------------------------------------------


def one_hot_logits(column: int, value: float = 5.0) -> torch.Tensor:
    logits = torch.zeros(1, 1000)
    logits[0, column] = value
    return logits


def test_identity_projection_keeps_all_columns():
    assert imagenet.identity_projection(one_hot_logits(417)).argmax(1).item() == 417


@pytest.mark.parametrize("adapter", ["imagenet_r", "imagenet_a"])
def test_subset_projection_selects_the_sublist_columns(adapter):
    columns = imagenet.class_sublist(adapter)
    project = imagenet.columns_projection(columns)
    for position in (0, 57, 199):
        projected = project(one_hot_logits(columns[position]))
        assert projected.shape == (1, 200) and projected.argmax(1).item() == position
    outside = next(c for c in range(1000) if c not in columns)
    assert project(one_hot_logits(outside)).abs().sum() == 0  # a column outside the set is dropped


def test_objectnet_projection_is_the_max_over_mapped_columns():
    classes = imagenet.objectnet_classes()
    project = imagenet.max_projection([ids for _, ids in classes])
    k = [folder for folder, _ in classes].index("alarm_clock")
    analog, digital = dict(classes)["alarm_clock"]
    logits = torch.full((1, 1000), -1.0)
    logits[0, analog], logits[0, digital] = 2.0, 7.0
    projected = project(logits)
    assert projected.shape == (1, 113) and projected.argmax(1).item() == k
    assert projected[0, k].item() == 7.0  # the max, not a sum or a mean
    assert projected[0, [i for i in range(113) if i != k]].eq(-1.0).all()


@pytest.mark.parametrize("project", [
    imagenet.identity_projection,
    imagenet.columns_projection([1, 2]),
    imagenet.max_projection([[1], [2, 3]]),
])
def test_projections_refuse_a_head_that_is_not_imagenet(project):
    with pytest.raises(ClipmergeError, match="1000 ImageNet classes"):
        project(torch.zeros(2, 10))


# --- the adapters end to end ----------------------------------------------------------------------


@pytest.mark.parametrize(("adapter", "count", "num_classes"), [
    ("imagenet", 1000, 1000),
    ("imagenet_v2", 1001, 1000),
    ("imagenet_sketch", 1000, 1000),
    ("imagenet_r", 200, 200),
    ("imagenet_a", 200, 200),
    ("objectnet", 113, 113),
])
def test_every_image_is_scored_as_its_own_class(roots, adapter, count, num_classes, caplog):
    assert adapter in ADAPTERS
    with caplog.at_level(logging.INFO, logger="clipmerge.data.imagenet"):
        eval_set = build_eval_set(adapter, roots[adapter], TO_TENSOR)
    assert len(eval_set.dataset) == count and eval_set.num_classes == num_classes
    assert f"{count} images in {num_classes} classes" in caplog.text
    assert f"{imagenet.FULL_COUNTS[adapter]:,}" in caplog.text  # the fixture is not the full dataset
    assert accuracy(eval_set) == 100.0


def test_v2_labels_are_numeric_folder_names_not_string_order(roots):
    eval_set = imagenet.imagenet_v2(roots["imagenet_v2"], TO_TENSOR, None)
    label_of = {Path(path).parent.name: label for path, label in eval_set.dataset.samples}
    assert label_of["2"] == 2 and label_of["10"] == 10 and label_of["999"] == 999
    # Sorted as strings (ImageFolder), folder "10" would be class 2.
    assert sorted(label_of)[2] == "10"


@pytest.mark.parametrize("folder", imagenet.V2_FOLDERS)
def test_v2_accepts_either_folder_name_or_the_folder_itself(roots, tmp_path, folder):
    source = roots["imagenet_v2"] / imagenet.V2_FOLDERS[0]
    (tmp_path / folder).symlink_to(source, target_is_directory=True)
    assert len(imagenet.imagenet_v2(tmp_path, None, None).dataset) == 1001
    assert len(imagenet.imagenet_v2(source, None, None).dataset) == 1001


def test_v2_refuses_two_copies(roots, tmp_path):
    for folder in imagenet.V2_FOLDERS:
        (tmp_path / folder).symlink_to(roots["imagenet_v2"] / imagenet.V2_FOLDERS[0], target_is_directory=True)
    with pytest.raises(ClipmergeError, match="keep one"):
        imagenet.imagenet_v2(tmp_path, None, None)


def test_objectnet_scores_only_mapped_folders_after_the_border_crop(roots):
    eval_set = imagenet.objectnet(roots["objectnet"], None, None)
    folders = [Path(path).parent.name for path, _ in eval_set.dataset.samples]
    assert folders == [folder for folder, _ in imagenet.objectnet_classes()]  # 113 of 313, label order
    assert [label for _, label in eval_set.dataset.samples] == list(range(113))
    image, _ = eval_set.dataset[0]
    assert image.size == (layouts.SIZE - 4, layouts.SIZE - 4)
    expected = layouts.encode_class(dict(imagenet.objectnet_classes())[folders[0]][-1])
    assert image.getcolors() == [((layouts.SIZE - 4) ** 2, expected)]  # only the interior is left


def test_objectnet_without_the_crop_would_score_the_border(roots):
    eval_set = imagenet.objectnet(roots["objectnet"], TO_TENSOR, None)
    eval_set.dataset.border = 0
    # The border class maps to no ObjectNet class: all-zero projections, whose argmax is class 0.
    assert accuracy(eval_set) == pytest.approx(100 / 113)


# --- wrong layouts --------------------------------------------------------------------------------


def small_r(tmp_path) -> Path:
    return layouts.build_subset(tmp_path / "imagenet-r", "imagenet_r")


def test_missing_root_names_root_and_layout(tmp_path):
    with pytest.raises(ClipmergeError, match=r"not_there.*folder not found.*expected layout <root>/n01440764"):
        imagenet.imagenet(tmp_path / "not_there", None, None)


def test_wrong_class_folders_are_refused(roots):
    with pytest.raises(ClipmergeError, match="800 of the 1000 class folders are missing") as info:
        imagenet.imagenet(roots["imagenet_r"], None, None)
    assert str(roots["imagenet_r"]) in str(info.value)
    with pytest.raises(ClipmergeError, match="800 folders are not classes of this set"):
        imagenet.imagenet_r(roots["imagenet"], None, None)


def test_r_and_a_folders_are_not_interchangeable(roots):
    with pytest.raises(ClipmergeError, match="imagenet_a: .*class folders are missing"):
        imagenet.imagenet_a(roots["imagenet_r"], None, None)


def test_parent_folder_gets_a_hint(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(ClipmergeError, match=r"did you mean .*val\?"):
        imagenet.imagenet(tmp_path, None, None)


def test_empty_class_folder_is_named(tmp_path):
    root = small_r(tmp_path)
    wnid = imagenet.imagenet_wnids()[imagenet.class_sublist("imagenet_r")[5]]
    for image in (root / wnid).iterdir():
        image.unlink()
    (root / wnid / "notes.txt").write_text("not an image")
    with pytest.raises(ClipmergeError, match=f"class folder '{wnid}' holds no images"):
        imagenet.imagenet_r(root, None, None)


def test_zero_images_is_refused(tmp_path):
    root = small_r(tmp_path)
    for folder in root.iterdir():
        if folder.is_dir():
            shutil.rmtree(folder)
            folder.mkdir()
    with pytest.raises(ClipmergeError, match="holds no images"):
        imagenet.imagenet_r(root, None, None)


def test_objectnet_layout_errors(roots, tmp_path):
    with pytest.raises(ClipmergeError, match="no images/ folder.*313 object folders"):
        imagenet.objectnet(roots["objectnet"] / "images", None, None)
    images = tmp_path / "objectnet-1.0" / "images"
    images.mkdir(parents=True)
    for folder, _ in imagenet.objectnet_classes()[1:]:
        (images / folder).symlink_to(roots["objectnet"] / "images" / folder, target_is_directory=True)
    (images / "not_an_object").mkdir()
    with pytest.raises(ClipmergeError, match=r"1 folders that are not ObjectNet classes.*lacks 1 of the 113"):
        imagenet.objectnet(tmp_path / "objectnet-1.0", None, None)


def test_objectnet_warns_when_unmapped_folders_are_absent(roots, tmp_path, caplog):
    images = tmp_path / "objectnet-1.0" / "images"
    images.mkdir(parents=True)
    for folder, _ in imagenet.objectnet_classes():
        (images / folder).symlink_to(roots["objectnet"] / "images" / folder, target_is_directory=True)
    with caplog.at_level(logging.WARNING):
        assert len(imagenet.objectnet(tmp_path / "objectnet-1.0", None, None).dataset) == 113
    assert "113 of the 313 ObjectNet folders" in caplog.text


def test_a_head_that_is_not_imagenet_is_refused_early(roots):
    with pytest.raises(ClipmergeError, match="has 10 class names"):
        build_eval_set("imagenet_r", roots["imagenet_r"], None, [f"c{i}" for i in range(10)])
