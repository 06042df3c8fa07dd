"""The comparison table, checked number by number against eval JSONs written here."""

import json
import statistics
import subprocess
import sys

import pandas as pd
import pytest

from clipmerge.cli import main
from clipmerge.errors import ClipmergeError
from clipmerge.evaluation.records import read_evals
from clipmerge.layout import model_sort_key
from clipmerge.reporting import table as report
from clipmerge.reporting.results import model_benchmarks, read_metas, training_hours

ID, SHIFTS = "test", ["v2", "r", "sketch", "objectnet", "a"]
# top-1 per eval set (ID first, then SHIFTS), irregular so a swapped column cannot pass.
TOP1 = {
    "wise_ft_a0.5": [61.3, 52.1, 44.0, 30.2, 21.7, 12.9],
    "model_stock": [66.2, 55.0, 47.7, 33.3, 23.0, 13.1],
    "zeroshot": [40.5, 38.1, 50.3, 38.8, 25.5, 20.0],
    "finetune_seed1": [64.0, 53.5, 40.1, 29.9, 19.8, 10.4],
    "uniform_soup": [66.7, 54.9, 46.2, 32.0, 22.1, 12.5],
    "finetune_seed0": [63.1, 52.8, 41.0, 30.0, 20.4, 11.0],
}
HOURS_S = {"finetune_seed0": 1800.0, "finetune_seed1": 5400.0}  # the fine-tunes' jobs; merges take no time here
BENCHMARK_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def write_benchmark(root, model, seconds):
    """A Snakemake benchmark file (its real columns) of the job that made ``model``."""
    path = root / "benchmarks" / "models" / f"{model}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(BENCHMARK_HEADER + f"{seconds}\t0:00:00\t100.5\t200\t90\t95\t0\t0\t50.0\t{seconds / 2}\n")


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def write_study(root, device="cpu"):
    """results/<study>/ with meta.json, histories and eval JSONs; returns the eval paths."""
    ingredients = {"finetune_seed0": ["zeroshot"], "finetune_seed1": ["zeroshot"],
                   "uniform_soup": ["finetune_seed0", "finetune_seed1"],
                   "model_stock": ["zeroshot", "finetune_seed0", "finetune_seed1"],
                   "wise_ft_a0.5": ["zeroshot", "finetune_seed1"]}
    for model in TOP1:
        method = "finetune" if model.startswith("finetune") else "wise_ft" if model.startswith("wise") else model
        hparams = {"lr": 1e-4, "device": device} if method == "finetune" else {}
        write_json(root / "models" / model / "meta.json",
                   {"model": model, "method": method, "arch": "tiny", "pretrained": "demo", "seed": None,
                    "ingredients": ingredients.get(model, []), "hparams": hparams, "git_sha": "abc"})
    for model in TOP1:
        write_benchmark(root, model, HOURS_S.get(model, 0.0))
    paths = []
    for model, values in TOP1.items():
        for eval_set, top1 in zip([ID, *SHIFTS], values, strict=True):
            path = root / "eval" / model / f"{eval_set}.json"
            write_json(path, {"model": model, "eval_set": eval_set, "adapter": "x", "top1": top1,
                              "top5": top1 + 10, "n": 100})
            paths.append(path)
    return paths


@pytest.fixture
def study(tmp_path):
    root = tmp_path / "results" / "demo"
    return root, write_study(root)


def build(root, paths):
    """The table of the study under ``root`` from its files, as `clipmerge table` builds it."""
    return report.build_table(read_evals(paths), read_metas((root / "models").glob("*/meta.json")),
                              model_benchmarks((root / "benchmarks").rglob("*.tsv")), ID, SHIFTS)


def table_inputs(root, paths):
    return ["--evals", *map(str, paths), "--metas", *map(str, (root / "models").glob("*/meta.json")),
            "--benchmarks", *map(str, (root / "benchmarks").rglob("*.tsv"))]


def test_table_numbers_order_cost_and_best(study):
    root, paths = study
    table = build(root, paths)

    assert list(table.index) == ["zeroshot", "finetune_seed0", "finetune_seed1", "uniform_soup", "model_stock",
                                 "wise_ft_a0.5"]
    assert list(table.columns[:9]) == ["method", ID, *SHIFTS, "id", "avg_shifts"]
    for model, values in TOP1.items():
        row = table.loc[model]
        assert [row[c] for c in [ID, *SHIFTS]] == values
        assert row["id"] == values[0]
        assert row["avg_shifts"] == pytest.approx(statistics.fmean(values[1:]), abs=1e-12)

    assert table["num_finetunes"].to_dict() == {"zeroshot": 0, "finetune_seed0": 1, "finetune_seed1": 1,
                                                "uniform_soup": 2, "model_stock": 2, "wise_ft_a0.5": 1}
    assert table["cpu_hours"].to_dict() == pytest.approx(
        {"zeroshot": 0.0, "finetune_seed0": 0.5, "finetune_seed1": 1.5, "uniform_soup": 2.0, "model_stock": 2.0,
         "wise_ft_a0.5": 1.5})

    # Best per column: zero-shot wins the r/sketch/objectnet/a shifts and avg_shifts, soups win ID and v2.
    best = {c: list(table.index[table[f"best_{c}"]]) for c in [ID, *SHIFTS, "id", "avg_shifts"]}
    assert best == {ID: ["uniform_soup"], "v2": ["model_stock"], "r": ["zeroshot"], "sketch": ["zeroshot"],
                    "objectnet": ["zeroshot"], "a": ["zeroshot"], "id": ["uniform_soup"],
                    "avg_shifts": ["zeroshot"]}


def test_table_command_writes_csv_md_html_and_prints_markdown(study, tmp_path, capsys):
    root, paths = study
    out = tmp_path / "tables"
    rc = main(["table", *table_inputs(root, paths), "--id", ID,
               "--shifts", *SHIFTS, "--out-csv", str(out / "comparison.csv"), "--out-md", str(out / "comparison.md"),
               "--out-html", str(out / "comparison.html")])
    assert rc == 0

    csv = pd.read_csv(out / "comparison.csv", index_col="model")
    assert csv.loc["model_stock", "v2"] == 55.0 and csv.loc["zeroshot", "avg_shifts"] == pytest.approx(34.54)
    numeric = csv.drop(columns="method")
    assert all(pd.api.types.is_numeric_dtype(t) or pd.api.types.is_bool_dtype(t) for t in numeric.dtypes)

    md = (out / "comparison.md").read_text()
    assert md.strip() == capsys.readouterr().out.strip()
    zeroshot_line = next(line for line in md.splitlines() if line.startswith("| zeroshot "))
    assert "**34.54**" in zeroshot_line and "**50.30**" in zeroshot_line
    assert " 40.50 |" in zeroshot_line and "**40.50**" not in zeroshot_line
    html = (out / "comparison.html").read_text()
    assert "<b>66.70</b>" in html and "<b>55.00</b>" in html and html.count("<b>") == 8


def test_missing_eval_json_is_named(study, capsys):
    root, paths = study
    missing = root / "eval" / "model_stock" / "sketch.json"
    kept = [p for p in paths if p != missing]
    with pytest.raises(ClipmergeError, match=r"eval/model_stock/sketch\.json"):
        build(root, kept)

    missing.unlink()  # passed but not on disk: the CLI exits 2 naming the file
    rc = main(["table", *table_inputs(root, paths), "--id", ID, "--shifts", *SHIFTS, "--out-csv", str(root / "t.csv")])
    assert rc == 2
    assert f"{missing}: file not found" in capsys.readouterr().err


def test_eval_json_must_match_its_path(study):
    root, paths = study
    misfiled = root / "eval" / "uniform_soup" / "v2.json"
    misfiled.write_text(json.dumps({"model": "greedy_soup", "eval_set": "v2", "top1": 1, "top5": 2, "n": 3}))
    with pytest.raises(ClipmergeError, match="does not match its path"):
        read_evals(paths)


def test_hours_column_follows_the_recorded_device(tmp_path):
    for device, column in [("cuda:0", "gpu_hours"), ("auto", "compute_hours")]:
        root = tmp_path / device
        paths = write_study(root, device=device)
        table = build(root, paths)
        assert column in table.columns


def test_row_order_sorts_seeds_and_alphas_numerically():
    models = ["wise_ft_a1.0", "greedy_soup", "finetune_seed10", "wise_ft_a0.25", "model_stock_periodic",
              "finetune_seed2", "zeroshot", "model_stock", "uniform_soup", "other"]
    assert sorted(models, key=model_sort_key) == [
        "zeroshot", "finetune_seed2", "finetune_seed10", "uniform_soup", "greedy_soup", "model_stock",
        "model_stock_periodic", "wise_ft_a0.25", "wise_ft_a1.0", "other"]


def test_training_hours_adds_up_clock_restarts_after_resume():
    rows = [{"elapsed_s": s} for s in (600, 1200, 300, 2400)]  # resumed after 1200 s, clock restarted
    assert training_hours(rows) == pytest.approx((1200 + 2400) / 3600)


def test_periodic_model_stock_counts_its_seeds_on_its_own_clock(study):
    root, paths = study
    model = "model_stock_periodic"
    # Trained in lockstep: one job for all seeds, one clock.
    write_json(root / "models" / model / "meta.json",
               {"model": model, "method": model, "arch": "tiny", "pretrained": "demo", "seed": None,
                "ingredients": ["seed0", "seed1", "seed2"], "hparams": {"seeds": [0, 1, 2], "device": "cpu"},
                "git_sha": "abc"})
    write_benchmark(root, model, 7200.0)  # one job trains all three seeds
    for eval_set in [ID, *SHIFTS]:
        path = root / "eval" / model / f"{eval_set}.json"
        write_json(path, {"model": model, "eval_set": eval_set, "top1": 70.0, "top5": 90.0, "n": 100})
        paths.append(path)
    table = build(root, paths)
    assert list(table.index).index(model) == list(table.index).index("model_stock") + 1
    assert table.loc[model, "num_finetunes"] == 3 and table.loc[model, "cpu_hours"] == pytest.approx(2.0)


def test_downstream_modules_import_neither_torch_nor_mlflow():
    # The tracking environment has no torch, and `import mlflow` (1.6 s) waits until a command needs it.
    code = ("import sys\nfrom clipmerge.reporting import plots, results, table\n"
            "from clipmerge.tracking import runs, store\n"
            "from clipmerge.commands import init_mlflow, log_mlflow, plots, table\n"
            "print(sorted({'torch', 'mlflow'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
