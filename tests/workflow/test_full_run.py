"""The whole DAG on the tiny config, run for real with Snakemake, then the rerun contract."""

import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import yaml
from snakemake_runner import TINY_CONFIG, planned_jobs, snakemake

# The models with weights (rule evaluate runs them), then every table row: those and the ensemble.
EVALUATED = ["zeroshot", "finetune_seed0", "finetune_seed1", "finetune_seed2", "uniform_soup", "greedy_soup",
             "model_stock", "model_stock_periodic", "task_arithmetic", "ties", "dare", "dare_ties", "slerp",
             "wise_ft_a0.5"]
MODELS = [*EVALUATED, "ensemble"]
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
    assert jobs["finetune"] == 3 and jobs["evaluate"] == (len(EVALUATED) - 1) * len(SETS)
    assert jobs["ensemble"] == 1 and jobs["log_mlflow"] == len(MODELS) - 1
    untouched = {"make_world", "pretrain_demo", "build_zeroshot", "split_heldout", "init_mlflow"}
    assert not untouched & set(jobs)


def test_adding_a_seed_trains_only_the_new_seed(run_dir):
    jobs = planned_jobs(run_dir, configfile=edited_config(run_dir, lambda c: c["finetune"]["seeds"].append(3)))
    assert jobs["finetune"] == 1
    # the soups and the task-vector merges take every seed; Model Stock, its periodic variant and WiSE-FT
    # name their seeds, SLERP takes the first two
    assert {"merge_uniform_soup", "greedy_soup", "merge_task_arithmetic", "merge_ties", "merge_dare",
            "merge_dare_ties"} <= set(jobs)
    assert not {"merge_model_stock", "model_stock_periodic", "merge_wise_ft", "merge_slerp",
                "build_zeroshot"} & set(jobs)


def test_adding_a_set_decodes_it_once_and_evaluates_only_it(run_dir):
    """eval.jobs per_set (the default, the real run's): a new set is one cache job and one job per model."""
    def add_v2(config):
        config["eval"]["sets"]["v2"] = {"adapter": "imagefolder", "world_split": "v2"}
    jobs = planned_jobs(run_dir, configfile=edited_config(run_dir, add_v2))
    assert jobs["cache_eval_set"] == 1 and jobs["evaluate"] == len(EVALUATED)
    assert not {"finetune", "pretrain_demo", "merge_model_stock", "greedy_soup"} & set(jobs)


def test_the_ensemble_row_and_the_confidence_intervals(run_dir):
    import pandas as pd

    table = pd.read_csv(results(run_dir) / "tables" / "comparison.csv", index_col=0)
    assert table.loc["ensemble", "inference_passes"] == 3 and table.loc["ensemble", "num_finetunes"] == 3
    assert set(table["inference_passes"].drop("ensemble")) == {1}
    for column in [*SETS, "id", "avg_shifts"]:
        assert (table[f"{column}_lo"] <= table[column]).all() and (table[column] <= table[f"{column}_hi"]).all()
    paired = pd.read_csv(results(run_dir) / "tables" / "paired.csv")
    compared = set(EVALUATED[4:]) | {"ensemble"}  # every merge and the ensemble
    assert set(paired["model"]) == compared and set(paired["vs"]) == {"best_finetune", "uniform_soup"}
    from mlflow import MlflowClient

    receipt = json.loads((results(run_dir) / "tracking" / "ensemble.json").read_text())
    metrics = MlflowClient(receipt["tracking_uri"]).get_run(receipt["run_id"]).data.metrics
    assert metrics["top1_lo/test"] == pytest.approx(table.loc["ensemble", "test_lo"])
    assert metrics["top1_hi/avg_shifts"] == pytest.approx(table.loc["ensemble", "avg_shifts_hi"])


def test_the_bootstrap_seed_reruns_only_the_views(run_dir):
    jobs = planned_jobs(run_dir, configfile=edited_config(run_dir, lambda c: c.update(
        uncertainty={"bootstrap_seed": 1})))
    assert set(jobs) == {"compile_table", "plot_results", "log_mlflow", "log_summary", "all"}
    assert jobs["log_mlflow"] == len(MODELS)


# The demo's job shapes: one evaluation job per model (no cache), one MLflow job for the study.
DEMO_SHAPES = {"eval": {"jobs": "per_model", "cache": False}, "mlflow": {"jobs": "per_study"}}


def demo_shapes(config):
    for section, values in DEMO_SHAPES.items():
        config.setdefault(section, {}).update(values)


@pytest.fixture(scope="module")
def demo_shaped(run_dir, tmp_path_factory):
    """A copy of the finished run switched to the demo's job shapes and run: (its dir, config, the plan)."""
    copy = tmp_path_factory.mktemp("demo_shaped") / "run"
    shutil.copytree(run_dir, copy, symlinks=True)
    config = edited_config(copy, demo_shapes)
    planned = planned_jobs(copy, configfile=config)
    snakemake(copy, "--cores", "2", configfile=config)
    return copy, config, planned


def test_demo_job_shapes_rerun_only_evaluation_and_reporting(demo_shaped):
    _, _, planned = demo_shaped
    assert planned == {"evaluate": len(EVALUATED), "ensemble": 1, "log_mlflow": 1, "compile_table": 1,
                       "plot_results": 1, "all": 1}


def test_demo_job_shapes_give_byte_identical_results(run_dir, demo_shaped):
    """One process per model reading decoded images == one per set reading the cache, file for file."""
    copy, _, _ = demo_shaped
    for model in MODELS:
        for eval_set in SETS:
            for name in (f"{eval_set}.json", f"{eval_set}.predictions.safetensors"):
                rel = Path("results", "tiny", "eval", model, name)
                assert (copy / rel).read_bytes() == (run_dir / rel).read_bytes(), rel


def test_one_mlflow_job_keeps_one_run_per_model(demo_shaped):
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    copy, _, _ = demo_shaped
    receipts = {m: json.loads((results(copy) / "tracking" / f"{m}.json").read_text()) for m in MODELS}
    assert {r["action"] for r in receipts.values()} == {"unchanged"}  # same files, same runs: idempotent
    client = MlflowClient(f"sqlite:///{results(copy) / 'mlflow.db'}")
    runs = client.search_runs([receipts["zeroshot"]["experiment_id"]], run_view_type=ViewType.ACTIVE_ONLY)
    assert sorted(r.info.run_name for r in runs) == sorted([*MODELS, "summary"])


def test_with_one_job_per_model_a_new_set_reruns_each_models_job(demo_shaped):
    copy, _, _ = demo_shaped
    def add_v2(config):
        demo_shapes(config)
        config["eval"]["sets"]["v2"] = {"adapter": "imagefolder", "world_split": "v2"}
    assert planned_jobs(copy, configfile=edited_config(copy, demo_shapes)) == {}
    jobs = planned_jobs(copy, configfile=edited_config(copy, add_v2))
    assert jobs["evaluate"] == len(EVALUATED) and "cache_eval_set" not in jobs
    assert not {"finetune", "pretrain_demo", "merge_model_stock", "greedy_soup"} & set(jobs)


def test_report_embeds_table_and_plots(run_dir):
    report = run_dir / "report.html"
    snakemake(run_dir, "--report", str(report))
    html = report.read_text(errors="replace")
    assert report.stat().st_size > 10_000
    for name in ("comparison.csv", "costs.csv", "id_vs_shifts.png", "model_stock_geometry.png",
                 "model_stock_periodic_geometry.png", "greedy_soup.png"):
        assert name in html, name


# --- The rerun contract: code inputs derived from imports, params that hold only what changes a result.

# The command (and, for a streamed merge, the method module the registry loads) each rule runs: what the
# test expects a rule to depend on, stated here, independently of the rules' own `code(...)` calls.
RULE_COMMANDS = {
    "make_world": ("make-world",), "pretrain_demo": ("pretrain",), "split_heldout": ("split-heldout",),
    "build_zeroshot": ("zeroshot",), "finetune": ("finetune",), "model_stock_periodic": ("periodic",),
    "merge_model_stock": ("merge", "clipmerge.merging.model_stock"),
    "merge_uniform_soup": ("merge", "clipmerge.merging.uniform_soup"),
    "merge_wise_ft": ("merge", "clipmerge.merging.wise_ft"), "greedy_soup": ("greedy-soup",),
    **{f"merge_{m}": ("merge", f"clipmerge.merging.{m}") for m in ("task_arithmetic", "ties", "dare", "dare_ties",
                                                                    "slerp")},
    "evaluate": ("evaluate",), "cache_eval_set": ("cache-eval-set",), "init_mlflow": ("init-mlflow",),
    "log_mlflow": ("log-mlflow",),
    "log_summary": ("log-mlflow",), "compile_table": ("table",), "plot_results": ("plots",),
    "ensemble": ("ensemble",),
}


def source_files():
    """Every file of the package: its modules and the package data."""
    import clipmerge

    package = Path(clipmerge.__file__).resolve().parent
    return sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def rules_reading(path) -> list[str]:
    from clipmerge.workflow.code_inputs import code_inputs

    return sorted(rule for rule, (command, *extra) in RULE_COMMANDS.items()
                  if str(path) in code_inputs(command, *extra))


@contextlib.contextmanager
def edited(path):
    """``path`` edited: a line appended (Snakemake reruns on a new checksum, not on a touch alone),
    restored byte for byte, modification time included, afterwards."""
    stat, content = path.stat(), path.read_bytes()

    def interrupt(signum, frame):  # a SIGTERM (CI's time limit) still restores the file
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    path.write_bytes(content + b"\n# edited by the rerun-contract test\n")
    os.utime(path, (stat.st_atime, time.time() + 60))
    try:
        yield
    finally:
        path.write_bytes(content)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        signal.signal(signal.SIGTERM, previous)


def expected_after_editing(run_dir, rules, cache):
    """The jobs Snakemake plans when the given rules are forced: those rules and everything downstream."""
    key = tuple(rules)
    if key not in cache:
        cache[key] = planned_jobs(run_dir, "--forcerun", *rules) if rules else {}
    return cache[key]


def test_editing_model_stock_reruns_only_the_model_stock_merges_and_their_dependants(run_dir):
    import clipmerge.merging.model_stock as module

    path = Path(module.__file__)
    assert rules_reading(path) == ["merge_model_stock", "model_stock_periodic"]
    with edited(path):
        jobs = planned_jobs(run_dir)
    assert jobs["merge_model_stock"] == 1 and jobs["model_stock_periodic"] == 1
    assert jobs["evaluate"] == 2 * len(SETS) and jobs["log_mlflow"] == 2
    assert not {"finetune", "merge_uniform_soup", "merge_wise_ft", "greedy_soup", "build_zeroshot"} & set(jobs)


def test_editing_the_table_code_reruns_only_the_table_and_the_summary(run_dir):
    import clipmerge.reporting.table as module

    with edited(Path(module.__file__)):
        assert planned_jobs(run_dir) == {"compile_table": 1, "log_summary": 1, "all": 1}


def test_settings_that_change_no_result_rerun_nothing(run_dir):
    def tweak(config):
        config["finetune"]["checkpoint_every"] = 7  # how often the resumable state is saved
        # the GPUs of periodic Model Stock: its seeds in lockstep instead of one rank each (bit-identical)
        config["merge"]["model_stock_periodic"]["gpus"] = 1
    assert planned_jobs(run_dir, configfile=edited_config(run_dir, tweak)) == {}
    # Renaming the MLflow experiment re-logs every run, and retrains or re-evaluates nothing.
    jobs = planned_jobs(run_dir, configfile=edited_config(run_dir, lambda c: c.update(mlflow={"experiment": "x"})))
    assert set(jobs) == {"init_mlflow", "log_mlflow", "log_summary", "all"}


@pytest.mark.slow
def test_editing_any_source_file_reruns_exactly_the_jobs_that_import_it(run_dir):
    cache, checked = {}, 0
    for path in source_files():
        rules = rules_reading(path)
        with edited(path):
            actual = planned_jobs(run_dir)
        assert actual == expected_after_editing(run_dir, rules, cache), (path, rules)
        checked += bool(rules)
    assert checked >= 60  # the package's modules and data files read by some rule
