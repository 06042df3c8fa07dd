"""Evaluation from the preprocessed-image cache: the same logits as decoding, for every adapter; a stale,
partial or corrupt cache is rebuilt, never used."""

import json
import os

import pytest
import torch
from torchvision import transforms as T

from clipmerge.data import cache, imagenet
from clipmerge.data.eval_sets import ADAPTERS
from clipmerge.evaluation.evaluate import SetSource, build_cache, predict_set
from clipmerge.evaluation.predict import topk_accuracy
from clipmerge.models.classifier import new_classifier
from clipmerge.models.clip import TINY_ARCH, eval_transform, preprocess_cfg
from fixtures import imagenet_layouts as layouts

CPU = torch.device("cpu")
WNIDS = list(imagenet.imagenet_wnids()[:3])
# Normalize by mean 0, std 1: the colour-decoding stand-in model reads the pixels back exactly.
RAW = T.Compose([T.ToTensor(), T.Normalize([0.0] * 3, [1.0] * 3)])


@pytest.fixture(scope="module")
def roots(imagenet_roots, tmp_path_factory):
    """Every adapter's fixture; imagefolder gets ImageNet-train-like class folders named by wnid."""
    train = layouts.build_imagenet_train(tmp_path_factory.mktemp("folder") / "train", WNIDS, per_class=4)
    return {**imagenet_roots, "imagefolder": train}


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return new_classifier(TINY_ARCH, imagenet.NUM_IMAGENET_CLASSES).eval()


def names_for(adapter):
    return list(imagenet.imagenet_wnids()) if adapter == "imagefolder" else None


def predictions(model, transform, adapter, root, cache_file=None, batch_size=64):
    return predict_set(model, transform, SetSource(adapter, str(root), cache_file and str(cache_file)),
                       names_for(adapter), batch_size=batch_size, workers=0, device=CPU)


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_cached_logits_are_identical_to_decoded_logits(adapter, roots, classifier, tmp_path):
    transform = eval_transform(preprocess_cfg(TINY_ARCH))
    decoded = predictions(classifier, transform, adapter, roots[adapter])
    file = tmp_path / f"{adapter}.safetensors"
    assert build_cache(SetSource(adapter, str(roots[adapter]), str(file)), transform, names_for(adapter),
                       batch_size=64, workers=0) == len(decoded[1])
    cached = predictions(classifier, transform, adapter, roots[adapter], file)
    assert torch.equal(cached[0], decoded[0]) and torch.equal(cached[1], decoded[1])
    assert topk_accuracy(*cached) == topk_accuracy(*decoded)


def test_objectnet_cache_holds_the_pixels_after_the_border_crop(roots, tmp_path):
    """The border is in a wrong class's colour: 100 % only if the cache stored the cropped images."""
    logits, labels = predictions(layouts.ColourDecoder(), RAW, "objectnet", roots["objectnet"],
                                 tmp_path / "objectnet.safetensors")
    assert len(labels) == 113 and topk_accuracy(logits, labels, ks=(1,))[1] == 100.0


def test_batches_spanning_chunks_and_a_short_last_batch(roots, classifier, tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "CHUNK", 5)  # 12 images: chunks of 5, 5, 2; batches of 3 cross them
    transform = eval_transform(preprocess_cfg(TINY_ARCH))
    decoded = predictions(classifier, transform, "imagefolder", roots["imagefolder"], batch_size=3)
    cached = predictions(classifier, transform, "imagefolder", roots["imagefolder"], tmp_path / "c.safetensors", 3)
    assert torch.equal(cached[0], decoded[0])
    digests = json.loads(cache.safe_open(str(tmp_path / "c.safetensors"), "pt").metadata()["chunk_digests"])
    assert len(digests) == 3


def images_offset(path) -> int:
    """Byte offset of the ``images`` tensor's data in a safetensors file."""
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    return 8 + header_len + json.loads(raw[8:8 + header_len])["images"]["data_offsets"][0]


@pytest.fixture
def built(roots, tmp_path):
    """A cache of the imagefolder fixture, and a function that evaluates the stand-in model from it."""
    file = tmp_path / "folder.safetensors"
    model = layouts.ColourDecoder()
    predictions(model, RAW, "imagefolder", roots["imagefolder"], file)
    return file, lambda: predictions(model, RAW, "imagefolder", roots["imagefolder"], file)


def test_a_corrupt_cache_is_detected_rebuilt_and_never_used(built, caplog):
    file, evaluate = built
    good = evaluate()
    raw = bytearray(file.read_bytes())
    raw[images_offset(file) + 100] ^= 0xFF  # one flipped byte in the first chunk of pixels
    file.write_bytes(bytes(raw))
    with pytest.raises(cache.CorruptCache, match="do not match the digest"):
        with cache.open_cache(file) as opened:
            list(opened.chunks())
    again = evaluate()
    assert torch.equal(again[0], good[0]) and "rebuilding it and starting over" in caplog.text
    with cache.open_cache(file) as opened:
        list(opened.chunks())  # the rebuilt file verifies


def test_a_partial_cache_is_rebuilt(built, caplog):
    file, evaluate = built
    good = evaluate()
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    assert torch.equal(evaluate()[0], good[0])
    assert "unreadable or not an image cache" in caplog.text


def test_a_cache_is_rebuilt_when_an_image_file_changes(built, roots, tmp_path):
    file, evaluate = built
    before = cache.cache_fingerprint(file)
    image = sorted((roots["imagefolder"] / WNIDS[0]).iterdir())[0]
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    evaluate()
    assert cache.cache_fingerprint(file) not in (None, before)


def test_file_keys_name_path_size_and_mtime(roots):
    image = sorted((roots["imagefolder"] / WNIDS[0]).iterdir())[0]
    stat = image.stat()
    assert cache.file_keys([image], roots["imagefolder"]) == [
        f"{WNIDS[0]}/{image.name}:{stat.st_size}:{stat.st_mtime_ns}"]
