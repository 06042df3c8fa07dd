"""Bad inputs stop each command with a clear error (naming the file, key or tensor), exit code 2, and no
result already computed deleted or overwritten: every command runs with --out pointing at an existing
good result, and that result's folder must be byte-identical afterwards (no temp files left either).

Already covered elsewhere and not repeated here: the same checks on the library functions
(tests/unit/test_models.py, test_streaming.py, test_merging_driver.py), eval classes that are not the
head's (tests/cli/test_pretrained_zeroshot_evaluate.py), NaN loss during fine-tuning and recipe errors
(tests/cli/test_finetune_cli.py), periodic with one seed (tests/cli/test_periodic_cli.py), pickles where a
checkpoint is expected (test_no_pickle.py here), unusable seed lists in plan.check_methods
(tests/unit/test_plan.py); the workflow-level tests at the end show the plan check runs before any job.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import open_clip
import pytest
import torch
import yaml
from PIL import Image
from reliability_helpers import snapshot
from safetensors.torch import save_file
from snakemake_runner import TINY_CONFIG, snakemake

from clipmerge.cli import main
from clipmerge.files import write_json
from clipmerge.models.classifier import new_classifier, save_classifier
from clipmerge.models.clip import TINY_ARCH
from clipmerge.weights.checkpoint import header_metadata, load_weights

CLASSES = ["cat", "dog", "fox"]
NAN_KEY = "visual.transformer.resblocks.2.mlp.c_fc.weight"
NARROW_ARCH = "reliability-tiny-narrow"


def cli(argv: list[str]) -> int:
    """The exit code `clipmerge <argv>` would have (argparse errors raise SystemExit(2))."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def images(root, classes=CLASSES, per_class=4):
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(60 + 70 * c, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def save_model(model, path, arch=TINY_ARCH, meta=True):
    save_classifier(model, path, arch)
    if meta:
        write_json(path.with_name("meta.json"), {"model": path.parent.name, "pretrained": "demo"})
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A miniature results/ tree built by the real commands, plus a folder of bad inputs."""
    root = tmp_path_factory.mktemp("study")
    torch.set_num_threads(1)
    data = images(root / "train")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (root / "heldout.txt").write_text("".join(f"{c}/0.png\n" for c in CLASSES))
    models, bad = root / "models", root / "bad"

    torch.manual_seed(0)
    zeroshot = new_classifier(TINY_ARCH, 3)
    save_model(zeroshot, models / "zeroshot" / "model.safetensors")
    for seed in (0, 1):
        g = torch.Generator().manual_seed(seed)
        tuned = new_classifier(TINY_ARCH, 3)
        tuned.load_state_dict({k: v + 0.01 * torch.randn(v.shape, generator=g)
                               for k, v in zeroshot.state_dict().items()})
        save_model(tuned, models / f"finetune_seed{seed}" / "model.safetensors")
    m = {name: str(models / name / "model.safetensors") for name in ("zeroshot", "finetune_seed0", "finetune_seed1")}

    # The good results that the failing commands below must not touch.
    ok = [
        ["merge", "--method", "uniform_soup", "--inputs", m["finetune_seed0"], m["finetune_seed1"],
         "--out", str(models / "uniform_soup" / "model.safetensors")],
        ["merge", "--method", "model_stock", "--anchor", m["zeroshot"], "--inputs", m["finetune_seed0"],
         m["finetune_seed1"], "--out", str(models / "model_stock" / "model.safetensors")],
        ["greedy-soup", "--inputs", m["finetune_seed0"], m["finetune_seed1"], "--train-root", str(data),
         "--heldout", str(root / "heldout.txt"), "--workers", "0", "--device", "cpu",
         "--out", str(models / "greedy_soup" / "model.safetensors")],
        ["finetune", "--init", m["zeroshot"], "--train-root", str(data), "--heldout", str(root / "heldout.txt"),
         "--seed", "2", "--steps", "2", "--batch-size", "4", "--warmup-steps", "1", "--workers", "0",
         "--device", "cpu", "--out", str(models / "finetune_seed2" / "model.safetensors")],
        ["evaluate", "--model", m["zeroshot"], "--model-id", "zeroshot", "--set", "test", "imagefolder", str(data),
         str(root / "eval" / "zeroshot" / "test.json"), "--classnames", str(root / "classes.txt"), "--workers", "0",
         "--device", "cpu"],
    ]
    for argv in ok:
        assert cli(argv) == 0, argv

    # Bad inputs, each in its own model folder (with a meta.json, as a real model has).
    whole = (models / "finetune_seed0" / "model.safetensors").read_bytes()
    for name, content in [("truncated", whole[: len(whole) * 2 // 3]),
                          ("garbage", b"\x10\x00\x00\x00\x00\x00\x00\x00not a json header, not a checkpoint")]:
        (bad / name).mkdir(parents=True)
        (bad / name / "model.safetensors").write_bytes(content)
        (bad / name / "meta.json").write_text('{"model": "x", "pretrained": "demo"}')
    poisoned = load_weights(models / "finetune_seed1" / "model.safetensors")
    poisoned[NAN_KEY][1, 2] = float("nan")
    (bad / "nan").mkdir()
    save_file(poisoned, bad / "nan" / "model.safetensors",
              metadata=header_metadata(models / "finetune_seed1" / "model.safetensors"))
    (bad / "nan" / "meta.json").write_text('{"model": "x", "pretrained": "demo"}')
    # A real second architecture (half the width), and its weights under a header that claims clipmerge-tiny.
    config = copy.deepcopy(open_clip.get_model_config(TINY_ARCH))
    config["embed_dim"] = 32
    config["vision_cfg"].update(width=32, head_width=16)
    (root / "configs").mkdir()
    (root / "configs" / f"{NARROW_ARCH}.json").write_text(json.dumps(config))
    open_clip.add_model_config(root / "configs")
    narrow = new_classifier(NARROW_ARCH, 3)
    save_model(narrow, bad / "other_arch" / "model.safetensors", arch=NARROW_ARCH)
    (bad / "mislabelled").mkdir()
    save_file(narrow.state_dict(), bad / "mislabelled" / "model.safetensors",
              metadata={"format": "clipmerge-classifier-v1", "arch": TINY_ARCH, "num_classes": "3"})

    # Datasets: an empty folder, images without class folders, class folders without images.
    (root / "empty").mkdir()
    (root / "flat").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "flat" / "0.png")
    for c in CLASSES:
        (root / "no_images" / c).mkdir(parents=True)
    return root


def bad(study, name):
    return str(study / "bad" / name / "model.safetensors")


def model(study, name):
    return str(study / "models" / name / "model.safetensors")


def merge(study, inputs, method="uniform_soup", anchor=None, out="uniform_soup"):
    anchor_flags = ["--anchor", anchor] if anchor else []
    return ["merge", "--method", method, *anchor_flags, "--inputs", *inputs, "--out", model(study, out)]


def evaluate(study, weights, root="train"):
    return ["evaluate", "--model", weights, "--model-id", "zeroshot", "--set", "test", "imagefolder",
            str(study / root), str(study / "eval" / "zeroshot" / "test.json"), "--classnames",
            str(study / "classes.txt"), "--workers", "0", "--device", "cpu"]


def finetune(study, init, root="train"):
    return ["finetune", "--init", init, "--train-root", str(study / root), "--heldout", str(study / "heldout.txt"),
            "--seed", "2", "--steps", "2", "--batch-size", "4", "--warmup-steps", "1", "--workers", "0",
            "--device", "cpu", "--out", model(study, "finetune_seed2")]


def greedy(study, inputs):
    return ["greedy-soup", "--inputs", *inputs, "--train-root", str(study / "train"), "--heldout",
            str(study / "heldout.txt"), "--workers", "0", "--device", "cpu", "--out", model(study, "greedy_soup")]


# (argv(study), the result folder that must stay as it is, what the error must name)
CASES = {
    "merge-truncated": (lambda s: merge(s, [model(s, "finetune_seed0"), bad(s, "truncated")]),
                        "models/uniform_soup", lambda s: [bad(s, "truncated")]),
    "merge-garbage": (lambda s: merge(s, [model(s, "finetune_seed0"), bad(s, "garbage")]),
                      "models/uniform_soup", lambda s: [bad(s, "garbage")]),
    "merge-other-arch": (lambda s: merge(s, [model(s, "finetune_seed0"), bad(s, "other_arch")]),
                         "models/uniform_soup", lambda s: [model(s, "finetune_seed0"), bad(s, "other_arch")]),
    "merge-nan": (lambda s: merge(s, [model(s, "finetune_seed0"), bad(s, "nan")]),
                  "models/uniform_soup", lambda s: [f"{bad(s, 'nan')}: tensor '{NAN_KEY}' has 1 NaN/inf"]),
    "merge-unknown-method": (lambda s: merge(s, [model(s, "finetune_seed0"), model(s, "finetune_seed1")],
                                             "breadcrumbs"),
                             "models/uniform_soup", lambda s: ["--method: invalid choice: 'breadcrumbs'"]),
    "model-stock-one-input": (lambda s: merge(s, [model(s, "finetune_seed0")], "model_stock", model(s, "zeroshot"),
                                              "model_stock"),
                              "models/model_stock", lambda s: ["model_stock needs 2..N input checkpoints, got 1"]),
    "model-stock-anchor-other-arch": (
        lambda s: merge(s, [model(s, "finetune_seed0"), model(s, "finetune_seed1")], "model_stock",
                        bad(s, "other_arch"), "model_stock"),
        "models/model_stock", lambda s: [bad(s, "other_arch")]),
    "model-stock-anchor-nan": (
        lambda s: merge(s, [model(s, "finetune_seed0"), model(s, "finetune_seed1")], "model_stock", bad(s, "nan"),
                        "model_stock"),
        "models/model_stock", lambda s: [f"{bad(s, 'nan')}: tensor '{NAN_KEY}' has 1 NaN/inf"]),
    "evaluate-truncated": (lambda s: evaluate(s, bad(s, "truncated")), "eval/zeroshot",
                           lambda s: [bad(s, "truncated")]),
    "evaluate-garbage": (lambda s: evaluate(s, bad(s, "garbage")), "eval/zeroshot", lambda s: [bad(s, "garbage")]),
    "evaluate-nan": (lambda s: evaluate(s, bad(s, "nan")), "eval/zeroshot",
                     lambda s: [f"{bad(s, 'nan')}: tensor '{NAN_KEY}' has 1 NaN/inf"]),
    "evaluate-mislabelled-arch": (lambda s: evaluate(s, bad(s, "mislabelled")), "eval/zeroshot",
                                  lambda s: [bad(s, "mislabelled"), "' has shape (", "another architecture"]),
    "evaluate-empty-folder": (lambda s: evaluate(s, model(s, "zeroshot"), "empty"), "eval/zeroshot",
                              lambda s: [str(s / "empty"), "one sub-folder per class"]),
    "evaluate-flat-folder": (lambda s: evaluate(s, model(s, "zeroshot"), "flat"), "eval/zeroshot",
                             lambda s: [str(s / "flat"), "one sub-folder per class"]),
    "evaluate-class-folders-without-images": (lambda s: evaluate(s, model(s, "zeroshot"), "no_images"),
                                              "eval/zeroshot", lambda s: [str(s / "no_images")]),
    "finetune-truncated-init": (lambda s: finetune(s, bad(s, "truncated")), "models/finetune_seed2",
                                lambda s: [bad(s, "truncated")]),
    "finetune-nan-init": (lambda s: finetune(s, bad(s, "nan")), "models/finetune_seed2",
                          lambda s: [f"{bad(s, 'nan')}: tensor '{NAN_KEY}' has 1 NaN/inf"]),
    "finetune-empty-folder": (lambda s: finetune(s, model(s, "zeroshot"), "empty"), "models/finetune_seed2",
                              lambda s: [str(s / "empty")]),
    "finetune-flat-folder": (lambda s: finetune(s, model(s, "zeroshot"), "flat"), "models/finetune_seed2",
                             lambda s: [str(s / "flat")]),
    "greedy-truncated": (lambda s: greedy(s, [model(s, "finetune_seed0"), bad(s, "truncated")]),
                         "models/greedy_soup", lambda s: [bad(s, "truncated")]),
    "greedy-other-arch": (lambda s: greedy(s, [model(s, "finetune_seed0"), bad(s, "other_arch")]),
                          "models/greedy_soup", lambda s: [bad(s, "other_arch")]),
    "greedy-nan": (lambda s: greedy(s, [model(s, "finetune_seed0"), bad(s, "nan")]), "models/greedy_soup",
                   lambda s: [f"{bad(s, 'nan')}: tensor '{NAN_KEY}' has 1 NaN/inf"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_clearly_and_keeps_existing_results(study, capsys, case):
    make_argv, kept, named = CASES[case]
    argv = make_argv(study)
    before = snapshot(study / kept)
    assert before  # there is a result to protect
    capsys.readouterr()

    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert f"clipmerge {argv[0]}: error: " in err  # the CLI's one-line message, not a traceback
    for text in named(study):
        assert text in err, f"{text!r} not in: {err}"
    assert snapshot(study / kept) == before


# Workflow level: the plan check and the config schema stop Snakemake before any job runs.

def bad_config(edit):
    config = yaml.safe_load(TINY_CONFIG.read_text())
    edit(config)
    return config


def one_seed_soups(c):
    c["finetune"]["seeds"] = [0]
    c["merge"] = {"methods": ["uniform_soup", "greedy_soup"]}


def one_seed_periodic(c):
    c["finetune"]["seeds"] = [0]
    c["merge"] = {"methods": ["model_stock_periodic"]}


BAD_CONFIGS = {
    "soups-with-one-seed": (one_seed_soups,
                            "merge.uniform_soup: uniform_soup needs at least 2 fine-tunes (finetune.seeds, sweep, "
                            "imports), got ['finetune_seed0']"),
    "periodic-with-one-seed": (one_seed_periodic, "merge.model_stock_periodic: needs at least 2 fine-tuned seeds"),
    "model-stock-one-seed": (lambda c: c["merge"]["model_stock"].update(seeds=[0]),
                             "merge.model_stock: model_stock needs at least 2 fine-tunes"),
    "sweep-bounds-reversed": (lambda c: c.update(sweep={"variants": 2, "space": {"lr": {"log_uniform": [1e-3, 1e-5]}}}),
                              "sweep.space.lr.log_uniform: low 0.001 > high 1e-05 (bounds are [low, high])"),
    "unknown-method": (lambda c: c["merge"]["methods"].append("breadcrumbs"), "'breadcrumbs' is not one of"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_unusable_config_stops_before_any_job(tmp_path, case):
    edit, message = BAD_CONFIGS[case]
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(bad_config(edit)))
    workdir = tmp_path / "work"
    earlier = workdir / "results" / "tiny" / "models" / "finetune_seed0" / "model.safetensors"
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(b"an earlier result")
    before = snapshot(workdir / "results")

    proc = snakemake(workdir, "--cores", "1", configfile=config, check=False)  # a real run, not a dry run
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert snapshot(workdir / "results") == before
    assert not (workdir / "logs").exists()  # no job started
