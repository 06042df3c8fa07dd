"""Classifier checkpoints: round trip, and clear errors for corrupt, foreign and non-finite files."""

import pytest
import torch
from safetensors.torch import save_file

from clipmerge.errors import ClipmergeError
from clipmerge.models.classifier import load_classifier, new_classifier, save_classifier
from clipmerge.weights.checkpoint import classifier_arch, load_weights


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = new_classifier("clipmerge-tiny", 5)
    path = tmp_path / "model.safetensors"
    save_classifier(model, path, "clipmerge-tiny")
    return model, path


def test_round_trip_is_bit_identical(checkpoint):
    model, path = checkpoint
    assert classifier_arch(path) == ("clipmerge-tiny", 5)
    loaded = load_classifier(path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_forward_normalises_features(checkpoint):
    model, _ = checkpoint
    images = torch.randn(2, 3, 32, 32)
    features = model.features(images)
    assert torch.allclose(features.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(model(images), features @ model.head.weight.T + model.head.bias, atol=1e-5)


def test_truncated_file_names_the_file(checkpoint, tmp_path):
    _, path = checkpoint
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ClipmergeError, match="broken.safetensors"):
        load_weights(broken)


def test_nan_weights_name_the_tensor(checkpoint, tmp_path):
    model, _ = checkpoint
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["head.weight"][0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_file(state, path, metadata={"format": "clipmerge-classifier-v1", "arch": "clipmerge-tiny", "num_classes": "5"})
    with pytest.raises(ClipmergeError, match=r"'head.weight' has 1 NaN/inf"):
        load_classifier(path)


def test_checkpoint_of_another_architecture_is_rejected(checkpoint, tmp_path):
    model, _ = checkpoint
    state = dict(model.state_dict())
    state["head.weight"] = torch.zeros(5, 32)
    path = tmp_path / "other.safetensors"
    save_file(state, path, metadata={"format": "clipmerge-classifier-v1", "arch": "clipmerge-tiny", "num_classes": "5"})
    with pytest.raises(ClipmergeError, match=r"'head.weight' has shape \(5, 32\).*another architecture"):
        load_classifier(path)


def test_a_full_clip_file_is_not_a_classifier(tiny_clip_file):
    with pytest.raises(ClipmergeError, match="not a clipmerge classifier checkpoint"):
        load_classifier(tiny_clip_file)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ClipmergeError, match="nowhere.safetensors: checkpoint not found"):
        load_classifier(tmp_path / "nowhere.safetensors")
