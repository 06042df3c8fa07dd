"""The study plots: valid PNGs from result files, placeholders when a method is absent."""

import json

import pytest
from PIL import Image

from clipmerge.cli import main
from clipmerge.errors import ClipmergeError
from clipmerge.reporting import geometry, plots
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
                   [("--merge-diagnostics", "model_stock", "merge.json"),
                    ("--merge-history", "model_stock_periodic", "merge_history.json"),
                    ("--greedy-diagnostics", "greedy_soup", "greedy.json")]]
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
    # computation), every periodic merge and every greedy step.
    tensors = stock_tensors(blocks=12)
    write_json(root / "models" / "model_stock" / "merge.json", {"method": "model_stock", "tensors": tensors})
    write_json(root / "models" / "model_stock_periodic" / "merge_history.json",
               [{"step": step, "epoch": step / 5, "tensors": stock_tensors(blocks=12, shift=step)}
                for step in (5, 10, 15)])
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
    assert sorted(p.name for p in (tmp_path / "plots").glob("*.json")) == [
        "model_stock_geometry.json", "model_stock_periodic_geometry.json"]
    data = json.loads((tmp_path / "plots" / "model_stock_geometry.json").read_text())
    assert data["groups"] == geometry.aggregate(tensors)  # the plotted numbers are the aggregation
    assert (data["n_blocks"], data["n_tensors"], data["guarded"]) == (12, len(tensors),
                                                                      {"negative_cos": 1, "non_float": 1})


ATTENTION = ("in_proj_weight", "out_proj.weight")


def stock_tensors(blocks: int, shift: float = 0.0) -> dict[str, dict]:
    """Per-tensor Model Stock diagnostics of a ViT classifier with ``blocks`` blocks (two fine-tunes), as
    merge.json writes them; one tensor clamped, one non-float."""
    keys = ["visual.class_embedding", "visual.conv1.weight", "visual.ln_pre.weight", "visual.proj",
            "visual.ln_post.weight", "head.weight", "head.bias", "visual.counter"]
    keys += [f"visual.transformer.resblocks.{i}.{name}" for i in range(blocks)
             for name in ("ln_1.weight", "attn.in_proj_weight", "attn.out_proj.weight", "mlp.c_fc.weight")]
    tensors = {key: {"cos": 0.2 + 0.01 * i, "angle_deg": 78.0 - i * 0.1 - shift, "t": 0.3 + 0.01 * i,
                     "guard": None, "norms": [0.1 * (i + 1) + shift, 0.2 * (i + 1)]} for i, key in enumerate(keys)}
    tensors["visual.transformer.resblocks.1.mlp.c_fc.weight"] |= {"cos": 0.0, "t": 0.0, "guard": "negative_cos"}
    tensors["visual.counter"] = {"cos": None, "angle_deg": None, "t": None, "guard": "non_float", "norms": None}
    return tensors


def test_geometry_plots_write_a_png_and_the_numbers_they_draw(tmp_path):
    merge = tmp_path / "merge.json"
    tensors = stock_tensors(blocks=3)
    write_json(merge, {"model": "model_stock", "tensors": tensors})
    data = plots.geometry_data(merge)
    fig, drawn = plots.plot_model_stock_geometry(data)
    assert drawn is data and data["model"] == "model_stock" and data["n_blocks"] == 3
    assert data["groups"] == geometry.aggregate(tensors)
    block1 = next(r for r in data["groups"] if (r["depth"], r["kind"]) == (1, "attention"))
    i, j = (list(tensors).index(f"visual.transformer.resblocks.1.attn.{p}") for p in ATTENTION)
    assert block1["angle_deg_mean"] == pytest.approx(78.0 - (i + j) * 0.1 / 2)
    assert block1["delta_norm_mean"] == pytest.approx(((0.1 + 0.2) * (i + 1) / 2 + (0.1 + 0.2) * (j + 1) / 2) / 2)
    # the unknown non-float key has no depth: in the JSON, not on the depth axis
    assert {(r["depth"], r["kind"]) for r in data["groups"] if r["depth"] is None} == {(None, "other")}
    fig.savefig(tmp_path / "g.png")
    assert png_size(tmp_path / "g.png")[0] > 0


def test_periodic_history_is_read_merge_by_merge(tmp_path):
    history = tmp_path / "merge_history.json"
    merges = [{"step": step, "epoch": step / 4, "summary": {}, "tensors": stock_tensors(blocks=2, shift=step)}
              for step in (4, 8)]
    write_json(history, merges)
    data = plots.periodic_geometry_data(history)
    assert [(m["step"], m["epoch"]) for m in data["merges"]] == [(4, 1.0), (8, 2.0)]
    assert data["n_blocks"] == 2 and data["n_tensors"] == len(merges[0]["tensors"])
    assert data["groups"]["attention"] == [f"visual.transformer.resblocks.{i}.attn.{p}"
                                           for i in range(2) for p in ATTENTION]
    for merge, written in zip(data["merges"], merges, strict=True):
        strip = [{k: v for k, v in row.items() if k != "keys"} for row in
                 geometry.aggregate(written["tensors"], ("kind",))]
        assert merge["by_kind"] == strip
        assert merge["guarded"] == {"negative_cos": 1, "non_float": 1}
    # By hand: the mean angle of the attention tensors drops by the shift of each merge.
    attention = [next(r for r in m["by_kind"] if r["kind"] == "attention")["angle_deg_mean"] for m in data["merges"]]
    assert attention[0] - attention[1] == pytest.approx(8 - 4)
    depth0 = [next(r for r in m["by_depth"] if r["depth"] == 0) for m in data["merges"]]
    assert [r["n_tensors"] for r in depth0] == [4, 4]
    fig, _ = plots.plot_periodic_geometry(data)
    fig.savefig(tmp_path / "p.png")
    assert png_size(tmp_path / "p.png")[0] > 0
    write_json(history, [{"step": 4, "summary": {}}])  # a merge without per-tensor diagnostics
    with pytest.raises(ClipmergeError, match=r"merge 0 \(step 4\): 'tensors' must be"):
        plots.periodic_geometry_data(history)


def test_missing_methods_get_placeholders_and_only_requested_plots_are_written(tmp_path):
    root = tmp_path / "demo"
    paths = write_study(root, {"zeroshot": [], "finetune_seed0": ["zeroshot"]})
    out = tmp_path / "plots"
    assert run_plots(root, paths, out, "--plots", "wise_ft_curve", "greedy_soup", "model_stock_geometry",
                     "model_stock_periodic_geometry") == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "greedy_soup.png", "model_stock_geometry.json", "model_stock_geometry.png",
        "model_stock_periodic_geometry.json", "model_stock_periodic_geometry.png", "wise_ft_curve.png"]
    for png in out.glob("*.png"):
        assert png_size(png) == PLACEHOLDER_PX
    data = json.loads((out / "model_stock_geometry.json").read_text())
    assert data == {"plot": "model_stock_geometry",
                    "no_data": "no Model Stock merge diagnostics (not part of this study)"}


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
