"""The study plots: valid PNGs from result files, placeholders when a method is absent."""

import json

import pytest
from PIL import Image

from clipmerge.cli import main
from clipmerge.errors import ClipmergeError
from clipmerge.reporting import plots
from clipmerge.reporting.results import read_metas

ID, SHIFTS = "test", ["v2", "r"]
PLACEHOLDER_PX = (600, 180)  # plots.placeholder's 5 x 1.5 in at plots.DPI


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def write_study(root, models):
    """meta.json and eval JSONs for ``{model: ingredients}``; returns the eval paths."""
    paths = []
    for i, (model, ingredients) in enumerate(models.items()):
        write_json(root / "models" / model / "meta.json",
                   {"model": model, "method": model, "arch": "tiny", "pretrained": "demo", "seed": None,
                    "ingredients": ingredients, "hparams": {}, "git_sha": "abc"})
        for j, eval_set in enumerate([ID, *SHIFTS]):
            path = root / "eval" / model / f"{eval_set}.json"
            write_json(path, {"model": model, "eval_set": eval_set, "top1": 50.0 + i - 3 * j, "top5": 90.0, "n": 10})
            paths.append(path)
    return paths


FULL = {"zeroshot": [], "finetune_seed0": ["zeroshot"], "finetune_seed1": ["zeroshot"],
        "greedy_soup": ["finetune_seed1"], "model_stock": ["zeroshot", "finetune_seed0", "finetune_seed1"],
        "wise_ft_a0.25": ["zeroshot", "finetune_seed0"], "wise_ft_a0.75": ["zeroshot", "finetune_seed0"]}


def run_plots(root, paths, out, *extra):
    diagnostics = [(flag, root / "models" / model / name) for flag, model, name in
                   [("--merge-diagnostics", "model_stock", "merge.json"), ("--greedy-diagnostics", "greedy_soup",
                                                                           "greedy.json")]]
    flags = [str(a) for flag, path in diagnostics if path.is_file() for a in (flag, path)]
    return main(["plots", "--evals", *map(str, paths), "--metas", *map(str, (root / "models").glob("*/meta.json")),
                 "--id", ID, "--shifts", *SHIFTS, "--out-dir", str(out), *flags, *extra])


def png_size(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()
        return im.size


def test_all_plots_are_valid_pngs(tmp_path):
    root = tmp_path / "demo"
    paths = write_study(root, FULL)
    # The formats clipmerge.merging writes: per-tensor diagnostics (null where a guard skipped the
    # computation) and every greedy step.
    tensors = {f"visual.block{i}.weight": {"cos": 0.2 + 0.01 * i, "angle_deg": 78.0, "t": 0.3 + 0.01 * i,
                                           "guard": None} for i in range(50)}
    tensors["visual.block2.weight"] |= {"cos": 0.0, "t": 0.0, "guard": "negative_cos"}
    tensors["visual.block7.weight"] = {"cos": None, "angle_deg": None, "t": None, "guard": "non_float"}
    write_json(root / "models" / "model_stock" / "merge.json", {"method": "model_stock", "tensors": tensors})
    write_json(root / "models" / "greedy_soup" / "greedy.json", {
        "ranking": [{"candidate": "finetune_seed1", "accuracy": 71.0},
                    {"candidate": "finetune_seed0", "accuracy": 70.0}],
        "steps": [{"candidate": "finetune_seed1", "accuracy": 71.0, "accepted": True},
                  {"candidate": "finetune_seed0", "accuracy": 70.5, "accepted": False}],
        "ingredients": ["finetune_seed1"], "best_accuracy": 71.0})

    assert run_plots(root, paths, tmp_path / "plots") == 0
    for name in plots.PLOTS:
        width, height = png_size(tmp_path / "plots" / f"{name}.png")
        assert width >= 500 and height >= 400, name  # a real figure, not the placeholder


def test_missing_methods_get_placeholders_and_only_requested_plots_are_written(tmp_path):
    root = tmp_path / "demo"
    paths = write_study(root, {"zeroshot": [], "finetune_seed0": ["zeroshot"]})
    out = tmp_path / "plots"
    assert run_plots(root, paths, out, "--plots", "wise_ft_curve", "greedy_soup", "model_stock_ratios") == 0
    assert sorted(p.name for p in out.iterdir()) == ["greedy_soup.png", "model_stock_ratios.png",
                                                     "wise_ft_curve.png"]
    for png in out.iterdir():
        assert png_size(png) == PLACEHOLDER_PX


def test_wise_ft_curve_runs_from_zeroshot_to_its_finetune(tmp_path):
    accuracy = {m: (0.0, 0.0) for m in ["zeroshot", "finetune_seed0", "wise_ft_a0.5", "wise_ft_a1.0"]}
    for model in ["wise_ft_a0.5", "wise_ft_a1.0"]:
        write_json(tmp_path / model / "meta.json", {"model": model, "ingredients": ["zeroshot", "finetune_seed0"]})
    # alpha 1 is a WiSE-FT model already, so the fine-tune is not appended as a second alpha-1 point.
    assert plots.wise_curves(accuracy, read_metas(tmp_path.glob("*/meta.json"))) == {
        "finetune_seed0": [(0.0, "zeroshot"), (0.5, "wise_ft_a0.5"), (1.0, "wise_ft_a1.0")]}


def test_unreadable_greedy_json_is_named(tmp_path):
    path = tmp_path / "greedy.json"
    write_json(path, {"steps": [{"model": "finetune_seed0", "score": 1.0}]})
    with pytest.raises(ClipmergeError, match=r"greedy\.json: greedy step .* needs 'candidate'"):
        plots.read_greedy_steps(path)
