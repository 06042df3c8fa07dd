"""`clipmerge greedy-soup` on tiny real classifiers and a tiny ImageNet-train-layout folder, and the
held-out split it reads."""

import json
import logging

import pytest
import torch
from torch.utils.data import DataLoader

from clipmerge import cli
from clipmerge.data.splits import heldout_set, image_folder
from clipmerge.evaluation.predict import predict, topk_accuracy
from clipmerge.files import write_json
from clipmerge.models.classifier import load_classifier, new_classifier, save_classifier
from clipmerge.models.clip import TINY_ARCH, eval_transform, preprocess_cfg
from clipmerge.weights.checkpoint import header_metadata, load_weights
from fixtures import imagenet_layouts as layouts

WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361"]
PER_CLASS = 6
HELDOUT_PER_CLASS = 3


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("greedy")


@pytest.fixture(scope="module")
def train_root(workdir):
    return layouts.build_imagenet_train(workdir / "train", WNIDS, per_class=PER_CLASS)


@pytest.fixture(scope="module")
def heldout(workdir, train_root):
    out = workdir / "splits" / "heldout.txt"
    assert split(train_root, out, seed=0) == 0
    return out


def split(train_root, out, seed, per_class=HELDOUT_PER_CLASS) -> int:
    return cli.main(["split-heldout", "--train-root", str(train_root), "--per-class", str(per_class),
                     "--seed", str(seed), "--out", str(out)])


def perturbed(base, seed: int, scale: float = 0.1):
    """A "fine-tune" of ``base``: the same weights plus seeded noise."""
    generator = torch.Generator().manual_seed(seed)
    model = new_classifier(TINY_ARCH, len(WNIDS))
    model.load_state_dict({k: v + scale * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
                           for k, v in base.state_dict().items()})
    return model


def save(model, root, model_id):
    path = root / model_id / "model.safetensors"
    save_classifier(model, path, TINY_ARCH)
    write_json(path.with_name("meta.json"), {"model": model_id, "pretrained": "random"})
    return path


@torch.no_grad()
def prototype_classifier(train_root):
    """A tiny classifier whose head holds the mean feature of each class: it scores 100% on the fixture."""
    torch.manual_seed(0)
    model = new_classifier(TINY_ARCH, len(WNIDS))
    transform = eval_transform(preprocess_cfg(TINY_ARCH))
    images, labels = next(iter(DataLoader(image_folder(train_root, transform), batch_size=1000)))
    features = model.features(images)
    prototypes = torch.stack([features[labels == c].mean(0) for c in range(len(WNIDS))])
    model.head.weight.copy_(20 * torch.nn.functional.normalize(prototypes, dim=-1))
    model.head.bias.zero_()
    return model


@pytest.fixture(scope="module")
def ingredients(workdir, train_root):
    base = prototype_classifier(train_root)
    return [save(perturbed(base, seed), workdir / "models", f"finetune_seed{seed}") for seed in range(4)]


def greedy(inputs, train_root, heldout, out, *extra) -> int:
    return cli.main(["greedy-soup", "--inputs", *map(str, inputs), "--train-root", str(train_root),
                     "--heldout", str(heldout), "--device", "cpu", "--workers", "0", "--batch-size", "5",
                     "--out", str(out), *extra])


@pytest.fixture(scope="module")
def soup(workdir, ingredients, train_root, heldout):
    out = workdir / "models" / "greedy_soup" / "model.safetensors"
    assert greedy(ingredients, train_root, heldout, out, "--cache", str(workdir / "cache.safetensors")) == 0
    return out


def read(path):
    return json.loads(path.read_text())


def test_split_is_deterministic_for_a_seed_in_imagenet_train_layout(workdir, train_root, heldout):
    again = workdir / "again.txt"
    assert split(train_root, again, seed=0) == 0
    assert again.read_text() == heldout.read_text()
    lines = heldout.read_text().splitlines()
    assert len(lines) == len(WNIDS) * HELDOUT_PER_CLASS
    for wnid in WNIDS:  # per class, with ImageNet's file names
        mine = [line for line in lines if line.startswith(f"{wnid}/")]
        assert len(mine) == HELDOUT_PER_CLASS and all(line.startswith(f"{wnid}/{wnid}_") for line in mine)
    other = workdir / "other.txt"
    assert split(train_root, other, seed=1) == 0
    assert other.read_text() != heldout.read_text()


def test_greedy_json_is_consistent(soup, ingredients):
    report = read(soup.with_name("greedy.json"))
    ids = [p.parent.name for p in ingredients]
    ranking = [r["candidate"] for r in report["ranking"]]
    accuracies = [r["accuracy"] for r in report["ranking"]]
    assert sorted(ranking) == sorted(ids) and accuracies == sorted(accuracies, reverse=True)
    steps = report["steps"]
    assert [s["candidate"] for s in steps] == ranking  # one pass, in ranking order
    assert {s["accepted"] for s in steps[1:]} == {True, False}  # the fixture exercises both outcomes
    assert steps[0] == {"candidate": ranking[0], "accuracy": accuracies[0], "accepted": True}
    best = steps[0]["accuracy"]
    for step in steps[1:]:  # strict: accepted exactly when the candidate soup beats the best so far
        assert step["accepted"] == (step["accuracy"] > best)
        best = max(best, step["accuracy"])
    assert report["best_accuracy"] == best
    assert report["ingredients"] == [s["candidate"] for s in steps if s["accepted"]]
    assert report["ingredients"][0] == ranking[0]
    assert set(report["ingredients"]) <= set(ids)
    assert report["heldout_size"] == len(WNIDS) * HELDOUT_PER_CLASS and report["accept"] == "strict"


def test_meta_json_follows_the_contract(soup, ingredients):
    meta = read(soup.with_name("meta.json"))
    report = read(soup.with_name("greedy.json"))
    assert meta["model"] == "greedy_soup" and meta["method"] == "greedy_soup"
    assert meta["arch"] == TINY_ARCH and meta["pretrained"] == "random" and meta["seed"] is None
    assert meta["ingredients"] == report["ingredients"]
    assert meta["hparams"] == {"accept": "strict", "heldout_size": len(WNIDS) * HELDOUT_PER_CLASS, "precision": "fp32"}
    assert set(meta) == {"model", "method", "arch", "pretrained", "seed", "ingredients", "hparams", "git_sha"}


def test_soup_is_the_uniform_average_of_its_ingredients(soup, ingredients):
    assert header_metadata(soup) == header_metadata(ingredients[0])
    chosen = read(soup.with_name("meta.json"))["ingredients"]
    paths = {p.parent.name: p for p in ingredients}
    states = [load_weights(paths[model_id]) for model_id in chosen]
    for key, value in load_weights(soup).items():
        expected = torch.stack([s[key].float() for s in states]).mean(0)
        torch.testing.assert_close(value.float(), expected, rtol=1e-5, atol=1e-6)


def test_soup_accuracy_on_decoded_images_matches_the_cached_evaluation(soup, train_root, heldout):
    dataset = heldout_set(train_root, heldout, eval_transform(preprocess_cfg(TINY_ARCH)))
    logits, labels = predict(load_classifier(soup), DataLoader(dataset, batch_size=5), torch.device("cpu"))
    top1 = topk_accuracy(logits, labels, ks=(1,))[1]
    assert top1 == pytest.approx(read(soup.with_name("greedy.json"))["best_accuracy"])


def test_the_cache_is_reused(soup, workdir, ingredients, train_root, heldout, caplog):
    out = workdir / "again" / "model.safetensors"
    with caplog.at_level(logging.INFO):
        assert greedy(ingredients, train_root, heldout, out, "--cache", str(workdir / "cache.safetensors")) == 0
    assert "reusing image cache" in caplog.text
    assert read(out.with_name("greedy.json"))["steps"] == read(soup.with_name("greedy.json"))["steps"]


@pytest.mark.parametrize(("accept", "kept"), [("strict", 1), ("geq", 2)])
def test_accept_decides_ties(workdir, ingredients, train_root, heldout, accept, kept):
    # An identical copy makes a soup with exactly the same accuracy: only ">=" keeps it.
    twin = save(load_classifier(ingredients[0]), workdir / "twins", "finetune_twin")
    out = workdir / f"tie_{accept}" / "model.safetensors"
    assert greedy([ingredients[0], twin], train_root, heldout, out, "--accept", accept) == 0
    meta = read(out.with_name("meta.json"))
    assert len(meta["ingredients"]) == kept and meta["hparams"]["accept"] == accept


def test_inputs_of_another_head_are_refused(workdir, ingredients, train_root, heldout, capsys):
    other = save(new_classifier(TINY_ARCH, 7), workdir / "other", "finetune_other")
    out = workdir / "refused" / "model.safetensors"
    assert greedy([ingredients[0], other], train_root, heldout, out) == 2
    assert "finetune_other" in capsys.readouterr().err and not out.exists()


def test_head_must_match_the_training_classes(workdir, train_root, heldout, capsys):
    wide = save(new_classifier(TINY_ARCH, 7), workdir / "wide", "finetune_wide")
    assert greedy([wide], train_root, heldout, workdir / "wide_out" / "model.safetensors") == 2
    assert "4 class folders, but the checkpoints' head has 7 classes" in capsys.readouterr().err


def test_duplicate_model_ids_are_refused(workdir, ingredients, train_root, heldout, capsys):
    copy = save(load_classifier(ingredients[1]), workdir / "copies", ingredients[0].parent.name)
    assert greedy([ingredients[0], copy], train_root, heldout, workdir / "dup" / "model.safetensors") == 2
    assert "same model id" in capsys.readouterr().err
