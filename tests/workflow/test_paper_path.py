"""The paper path end to end: config/imagenet.yaml and config/model_soups_vit_b32.yaml run through
Snakemake on the real dataset layouts, with three changes only — a tiny architecture, a local
pretrained file open_clip loads itself (through the real fetch_pretrained rule), and dataset roots
pointing at generated fixtures in the real layouts (tests/fixtures/imagenet_layouts.py), with one
held-out image per class instead of 26 (the fixture has 3 per class)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from snakemake_runner import REPO, planned_jobs, snakemake

from clipmerge.data import imagenet
from clipmerge.data.imagenet import objectnet_classes
from clipmerge.models.clip import TINY_ARCH, create_clip
from fixtures import external_checkpoints as ext
from fixtures import imagenet_layouts as layouts

TRAIN_PER_CLASS = 3  # 1 held out (26 in the real run), 2 trained on: 2,000 training images

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory, imagenet_roots):
    """The six eval sets, ImageNet-train with its 1000 wnid folders, and a pretrained tiny CLIP saved as
    a plain open_clip state dict (.pt), the way open_clip's own checkpoints are loaded."""
    base = tmp_path_factory.mktemp("paper_data")
    train = layouts.build_imagenet_train(base / "imagenet" / "train", imagenet.imagenet_wnids(), TRAIN_PER_CLASS)
    torch.manual_seed(0)
    pretrained = base / "tiny_open_clip.pt"
    torch.save(create_clip(TINY_ARCH).state_dict(), pretrained)
    return {"train": train, "pretrained": pretrained, **imagenet_roots}


def derived_config(name: str, data: dict, workdir, edit=None) -> os.PathLike:
    """``config/<name>`` with the architecture, the pretrained file and the dataset roots replaced."""
    config = yaml.safe_load((REPO / "config" / name).read_text())
    config["model"] = {"arch": TINY_ARCH, "pretrained": str(data["pretrained"])}
    config["train"]["data"] = {"root": str(data["train"])}
    config["train"]["heldout_per_class"] = 1
    for spec in config["eval"]["sets"].values():
        spec["root"] = str(data[spec["adapter"]])
    if edit:
        edit(config)
    path = workdir / f"derived_{name}"
    path.write_text(yaml.safe_dump(config))
    return path


def results(workdir, config):
    return workdir / "results" / yaml.safe_load(config.read_text())["study"]


def expected_n(data: dict, adapter: str) -> int:
    """The fixture's scored images of a set, counted on disk: every image, ObjectNet's only in the 113
    mapped folders."""
    root = data[adapter]
    if adapter == "objectnet":
        return sum(len(list((root / "images" / folder).iterdir())) for folder, _ in objectnet_classes())
    return sum(1 for path in root.rglob("*") if path.is_file() and path.name != "README.txt")


def check_study(workdir, config, data, models):
    """Every (model, set) evaluated with the fixture's scored images; the table, MLflow, a no-op rerun."""
    import pandas as pd
    from mlflow import MlflowClient

    out = results(workdir, config)
    sets = yaml.safe_load(config.read_text())["eval"]["sets"]
    expected = {name: expected_n(data, spec["adapter"]) for name, spec in sets.items()}
    assert expected["objectnet"] == 113 and expected["imagenet_r"] == expected["imagenet_a"] == 200
    for model in models:
        for eval_set in sets:
            result = json.loads((out / "eval" / model / f"{eval_set}.json").read_text())
            assert result["n"] == expected[eval_set], (model, eval_set)
    table = pd.read_csv(out / "tables" / "comparison.csv", index_col=0)
    assert sorted(table.index) == sorted(models)
    receipt = json.loads((out / "tracking" / "mlflow.json").read_text())
    client = MlflowClient(receipt["tracking_uri"])
    runs = client.search_runs([receipt["experiment_id"]], max_results=1000)
    assert sorted(r.info.run_name for r in runs if r.data.tags.get("role") == "model") == sorted(models)
    assert planned_jobs(workdir, configfile=config) == {}
    return out, {r.info.run_name: r for r in runs}


# Every table row: the evaluated models and the output-space ensemble of the fine-tunes (its own rule).
IMAGENET_MODELS = ["zeroshot", "finetune_seed0", "finetune_seed1", "finetune_seed2", "finetune_seed3",
                   "uniform_soup", "greedy_soup", "model_stock", "model_stock_periodic", "wise_ft_a0.5", "ensemble"]


def test_the_imagenet_config_runs_end_to_end_on_real_layouts(data, tmp_path):
    config = derived_config("imagenet.yaml", data, tmp_path)
    snakemake(tmp_path, "--cores", "2", configfile=config)
    out, _ = check_study(tmp_path, config, data, IMAGENET_MODELS)
    classes = {"imagenet_r": 200, "imagenet_a": 200, "objectnet": 113, "imagenet": 1000}
    for model in IMAGENET_MODELS:
        for eval_set, width in classes.items():  # R and A ranked among their 200 classes, not 1000
            assert json.loads((out / "eval" / model / f"{eval_set}.json").read_text())["classes"] == width
    assert len((out / "splits" / "heldout.txt").read_text().split()) == 1000
    assert (out / "plots" / "id_vs_shifts.png").stat().st_size > 0
    meta = json.loads((out / "pretrained" / "meta.json").read_text())
    assert meta["pretrained"] == str(data["pretrained"]) and meta["arch"] == TINY_ARCH


# --- model-soups' published fine-tunes as inputs --------------------------------------------------

IMPORTS = ["model_0", "model_1", "model_2", "model_3"]


@pytest.fixture(scope="module")
def soups_study(data, tmp_path_factory):
    """config/model_soups_vit_b32.yaml on four model-soups-format files (the zero-shot tower, perturbed,
    with perturbed zero-shot-like heads), model-soups' mask format and an hparam_info.json."""
    workdir = tmp_path_factory.mktemp("soups")
    downloads = workdir / "downloads"
    downloads.mkdir()
    clip_state = ext.clip_state(create_clip(TINY_ARCH, str(data["pretrained"])))
    generator = torch.Generator().manual_seed(1)
    for k, name in enumerate(IMPORTS):
        noisy = {key: v + 0.01 * (k + 1) * torch.randn(v.shape, generator=generator) if v.is_floating_point()
                 else v for key, v in clip_state.items()}
        head = torch.randn(1000, 64, generator=generator)
        torch.save(ext.model_soups_state(noisy, head, torch.zeros(1000)), downloads / f"{name}.pt")
    hparams = {"model_0": {"info": "LP initialization"}}
    hparams |= {name: {"aug": "rand-m12-n1", "wd": 0.1 * k, "lr": 1e-5 * k, "mix": 0.0, "smoothing": 0.1,
                       "epochs": 4 + k} for k, name in enumerate(IMPORTS[1:], start=1)}
    (downloads / "hparam_info.json").write_text(json.dumps(hparams))
    mask = np.zeros(1000 * TRAIN_PER_CLASS)
    mask[::TRAIN_PER_CLASS] = 1  # the first image of each class held out
    np.save(downloads / "imagenet_98_idxs.npy", mask)

    def edit(config):
        config["imports"] |= {"files": str(downloads / "{name}.pt"), "hparams": str(downloads / "hparam_info.json"),
                              "names": IMPORTS}
        config["train"]["heldout_mask"] = str(downloads / "imagenet_98_idxs.npy")
        config["merge"]["model_stock"]["models"] = ["imported_model_1", "imported_model_2"]
        config["merge"]["wise_ft"]["model"] = "imported_model_3"
        config["eval"]["jobs"] = "per_model"  # the imagenet test above runs the per-set shape

    config = derived_config("model_soups_vit_b32.yaml", data, workdir, edit)
    snakemake(workdir, "--cores", "2", configfile=config)
    return workdir, config, downloads, data


SOUPS_MODELS = ["zeroshot", *(f"imported_{n}" for n in IMPORTS), "uniform_soup", "greedy_soup", "model_stock",
                "wise_ft_a0.5", "ensemble"]


def test_published_fine_tunes_are_merged_evaluated_and_tracked_like_own_ones(soups_study):
    workdir, config, downloads, data = soups_study
    out, runs = check_study(workdir, config, data, SOUPS_MODELS)
    meta = json.loads((out / "models" / "imported_model_2" / "meta.json").read_text())
    assert meta["hparams"]["format"] == "model_soups" and meta["hparams"]["lr"] == 2e-5
    assert meta["hparams"]["source"] == str(downloads / "model_2.pt")
    assert runs["imported_model_2"].data.params["lr"] == "2e-05"
    assert runs["imported_model_2"].data.params["weight_decay"] == "0.2"
    assert json.loads((out / "models" / "uniform_soup" / "meta.json").read_text())["ingredients"] == [
        f"imported_{n}" for n in IMPORTS]
    stock = json.loads((out / "models" / "model_stock" / "meta.json").read_text())
    assert stock["ingredients"] == ["imported_model_1", "imported_model_2"]
    greedy = json.loads((out / "models" / "greedy_soup" / "greedy.json").read_text())
    assert greedy["heldout_size"] == 1000 and set(greedy["ingredients"]) <= {f"imported_{n}" for n in IMPORTS}
    heldout = (out / "splits" / "heldout.txt").read_text().split()
    assert heldout[:2] == [f"{w}/{w}_1.JPEG" for w in imagenet.imagenet_wnids()[:2]]


def test_a_changed_external_file_reconverts_only_that_model_and_its_dependants(soups_study):
    workdir, config, downloads, _ = soups_study
    source = downloads / "model_3.pt"
    stat = source.stat()
    os.utime(source, (stat.st_atime, time.time() + 60))
    try:
        jobs = planned_jobs(workdir, configfile=config)
    finally:
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # model_3 feeds both soups and WiSE-FT, not Model Stock (models 1 and 2): 4 models are re-evaluated.
    assert jobs["import_model"] == 1
    assert {k: jobs.get(k, 0) for k in ("merge_uniform_soup", "greedy_soup", "merge_wise_ft", "merge_model_stock")} == {
        "merge_uniform_soup": 1, "greedy_soup": 1, "merge_wise_ft": 1, "merge_model_stock": 0}
    assert jobs["evaluate"] == 4 and "build_zeroshot" not in jobs and "split_heldout" not in jobs


def test_a_changed_hparams_entry_reconverts_only_that_model(soups_study):
    workdir, config, downloads, _ = soups_study
    table = downloads / "hparam_info.json"
    original = table.read_bytes()
    hparams = json.loads(original)
    hparams["model_1"]["lr"] = 9e-5
    table.write_text(json.dumps(hparams))
    try:
        jobs = planned_jobs(workdir, configfile=config)
    finally:
        table.write_bytes(original)
    assert jobs["import_model"] == 1 and jobs["merge_model_stock"] == 1


def test_editing_the_import_code_reconverts_every_import_and_nothing_upstream(soups_study):
    import clipmerge.models.external as module

    workdir, config, _, _ = soups_study
    path = Path(module.__file__)
    stat, content = path.stat(), path.read_bytes()
    path.write_bytes(content + b"\n# edited by the rerun-contract test\n")
    try:
        jobs = planned_jobs(workdir, configfile=config)
    finally:
        path.write_bytes(content)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert jobs["import_model"] == len(IMPORTS) and jobs["merge_model_stock"] == 1
    assert not {"fetch_pretrained", "build_zeroshot", "split_heldout", "cache_eval_set"} & set(jobs)
