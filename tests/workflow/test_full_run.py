"""The whole DAG on the tiny config, run for real with Snakemake, then the rerun contract."""

import json

import pytest
import yaml
from snakemake_runner import TINY_CONFIG, planned_jobs, snakemake

MODELS = ["zeroshot", "finetune_seed0", "finetune_seed1", "finetune_seed2", "uniform_soup", "greedy_soup",
          "model_stock", "model_stock_periodic", "wise_ft_a0.5"]
SETS = ["test", "r", "sketch"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny_run")
    snakemake(workdir, "--cores", "2")
    return workdir


def results(run_dir):
    return run_dir / "results" / "tiny"


def test_every_model_is_evaluated_on_every_set(run_dir):
    for model in MODELS:
        for eval_set in SETS:
            result = json.loads((results(run_dir) / "eval" / model / f"{eval_set}.json").read_text())
            assert result["model"] == model and result["eval_set"] == eval_set
            assert result["n"] > 0 and 0 <= result["top1"] <= result["top5"] <= 100


def test_table_rows_match_eval_files(run_dir):
    import pandas as pd

    table = pd.read_csv(results(run_dir) / "tables" / "comparison.csv", index_col=0)
    assert list(table.index) == MODELS
    for model in MODELS:
        top1 = {s: json.loads((results(run_dir) / "eval" / model / f"{s}.json").read_text())["top1"] for s in SETS}
        assert table.loc[model, "id"] == pytest.approx(top1["test"])
        assert table.loc[model, "avg_shifts"] == pytest.approx((top1["r"] + top1["sketch"]) / 2)


def test_mlflow_holds_one_run_per_model(run_dir):
    from mlflow import MlflowClient

    receipt = json.loads((results(run_dir) / "tracking" / "mlflow.json").read_text())
    client = MlflowClient(receipt["tracking_uri"])
    runs = client.search_runs([receipt["experiment_id"]], max_results=1000)
    names = sorted(r.info.run_name for r in runs if r.info.run_name in MODELS)
    assert names == sorted(MODELS)
    stock = next(r for r in runs if r.info.run_name == "model_stock")
    assert set(stock.data.metrics) >= {"top1/test", "top1/id", "top1/avg_shifts"}


def test_second_run_has_nothing_to_do(run_dir):
    assert planned_jobs(run_dir) == {}


def edited_config(run_dir, edit):
    config = yaml.safe_load(TINY_CONFIG.read_text())
    edit(config)
    path = run_dir / "edited.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_changing_a_finetune_key_reruns_only_its_dependants(run_dir):
    jobs = planned_jobs(run_dir, configfile=edited_config(run_dir, lambda c: c["finetune"].update(lr=2e-4)))
    assert jobs["finetune"] == 3 and jobs["evaluate"] == (len(MODELS) - 1) * len(SETS)
    assert jobs["log_mlflow"] == len(MODELS) - 1
    untouched = {"make_world", "pretrain_demo", "build_zeroshot", "split_heldout", "init_mlflow"}
    assert not untouched & set(jobs)


def test_adding_a_seed_trains_only_the_new_seed(run_dir):
    jobs = planned_jobs(run_dir, configfile=edited_config(run_dir, lambda c: c["finetune"]["seeds"].append(3)))
    assert jobs["finetune"] == 1
    # the soups take every seed; Model Stock, its periodic variant and WiSE-FT name their seeds
    assert {"merge_uniform_soup", "greedy_soup"} <= set(jobs)
    assert not {"merge_model_stock", "model_stock_periodic", "merge_wise_ft", "build_zeroshot"} & set(jobs)


def test_report_embeds_table_and_plots(run_dir):
    report = run_dir / "report.html"
    snakemake(run_dir, "--report", str(report))
    html = report.read_text(errors="replace")
    assert report.stat().st_size > 10_000
    for name in ("comparison.csv", "id_vs_shifts.png", "model_stock_ratios.png"):
        assert name in html, name
