"""A study that mixes a hyper-parameter sweep and seeds, run for real with Snakemake on the tiny world:
3 sweep variants, the soups over them, Model Stock over 2 seeds; then the sweep's rerun contract."""

import json

import pandas as pd
import pytest
import yaml
from snakemake_runner import TINY_CONFIG, planned_jobs, snakemake

from clipmerge.workflow import plan

pytestmark = pytest.mark.slow

SPACE = {"lr": {"log_uniform": [5.0e-5, 5.0e-4]}, "label_smoothing": {"uniform": [0.0, 0.2], "p_zero": 0.5},
         "randaugment_ops": {"int_uniform": [0, 2]}, "randaugment_magnitude": {"int_uniform": [5, 15]}}
SEEDS, VARIANTS = ["finetune_seed0", "finetune_seed1"], ["finetune_hp0", "finetune_hp1", "finetune_hp2"]
MERGES = ["uniform_soup", "greedy_soup", "model_stock"]
MODELS = ["zeroshot", *SEEDS, *VARIANTS, *MERGES, "ensemble"]


def sweep_config(edit=None) -> dict:
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["finetune"]["seeds"] = [0, 1]
    config["sweep"] = {"variants": 3, "seed": 0, "space": SPACE}
    config["merge"] = {"methods": MERGES, "uniform_soup": {"ingredients": "sweep"},
                       "greedy_soup": {"ingredients": "sweep"}, "model_stock": {"seeds": [0, 1]}}
    config["eval"]["sets"] = {name: config["eval"]["sets"][name] for name in ("test", "r")}
    config["eval"] |= {"shifts": ["r"], "jobs": "per_model", "cache": False}
    config["mlflow"] = {"jobs": "per_study"}
    if edit:
        edit(config)
    return config


def write_config(workdir, name, config):
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sweep_run")
    snakemake(workdir, "--cores", "2", configfile=write_config(workdir, "sweep", sweep_config()))
    return workdir


def results(run_dir):
    return run_dir / "results" / "tiny"


def meta(run_dir, model):
    return json.loads((results(run_dir) / "models" / model / "meta.json").read_text())


def test_each_variant_trains_with_its_drawn_recipe_and_its_own_seed(run_dir):
    drawn = plan.sweep_variants(sweep_config())
    for k, model in enumerate(VARIANTS):
        record = meta(run_dir, model)
        assert record["model"] == model and record["method"] == "finetune" and record["seed"] == k
        assert {key: record["hparams"][key] for key in drawn[k]} == drawn[k]
    assert len({json.dumps(v, sort_keys=True) for v in drawn}) == 3
    assert meta(run_dir, "finetune_seed1")["hparams"]["lr"] == yaml.safe_load(TINY_CONFIG.read_text())["finetune"]["lr"]


def test_the_soups_take_the_sweep_and_model_stock_the_seeds(run_dir):
    assert meta(run_dir, "uniform_soup")["ingredients"] == VARIANTS
    assert meta(run_dir, "model_stock")["ingredients"] == SEEDS
    greedy = json.loads((results(run_dir) / "models" / "greedy_soup" / "greedy.json").read_text())
    ranked = [row["candidate"] for row in greedy["ranking"]]
    assert sorted(ranked) == VARIANTS  # ranked on the held-out split exactly as seeds would be
    assert set(meta(run_dir, "greedy_soup")["ingredients"]) <= set(VARIANTS)


def test_the_table_counts_what_each_merge_used_and_links_the_recipes(run_dir):
    table = pd.read_csv(results(run_dir) / "tables" / "comparison.csv", index_col=0)
    assert list(table.index) == MODELS
    assert table.loc["uniform_soup", "num_finetunes"] == 3 and table.loc["model_stock", "num_finetunes"] == 2
    assert table.loc["ensemble", "num_finetunes"] == 5
    hours = [c for c in table.columns if c.endswith("_hours")][0]
    assert table.loc["uniform_soup", hours] > table.loc[VARIANTS, hours].sum() > 0
    assert "tables/recipes.md" in (results(run_dir) / "tables" / "comparison.md").read_text()
    recipes = pd.read_csv(results(run_dir) / "tables" / "recipes.csv", index_col=0)
    assert list(recipes.index) == MODELS
    drawn = plan.sweep_variants(sweep_config())
    assert list(recipes.loc[VARIANTS, "lr"]) == [v["lr"] for v in drawn]
    assert recipes.loc["uniform_soup", "ingredients"] == " ".join(VARIANTS)
    assert "seeds 0 1" in (results(run_dir) / "tables" / "recipes.md").read_text()


def test_variants_and_seeds_log_the_same_mlflow_params(run_dir):
    from mlflow import MlflowClient

    receipt = json.loads((results(run_dir) / "tracking" / "mlflow.json").read_text())
    runs = {r.info.run_name: r for r in MlflowClient(receipt["tracking_uri"]).search_runs([receipt["experiment_id"]])}
    drawn = plan.sweep_variants(sweep_config())
    assert set(runs["finetune_hp1"].data.params) == set(runs["finetune_seed0"].data.params)
    assert float(runs["finetune_hp1"].data.params["lr"]) == drawn[1]["lr"]
    assert runs["finetune_hp1"].data.params["variant"] == "1" and runs["finetune_seed0"].data.params["variant"] == "-1"
    assert runs["finetune_hp2"].data.tags["augment"].startswith(("tv-rand-m", "none"))


def test_adding_a_variant_trains_one_job(run_dir):
    config = write_config(run_dir, "more", sweep_config(lambda c: c["sweep"].update(variants=4)))
    jobs = planned_jobs(run_dir, configfile=config)
    assert jobs["finetune"] == 1 and {"merge_uniform_soup", "greedy_soup", "ensemble"} <= set(jobs)
    assert "merge_model_stock" not in jobs


@pytest.mark.parametrize("edit", [
    lambda c: c["sweep"].update(seed=1),
    lambda c: c["sweep"]["space"]["lr"].update(log_uniform=[1.0e-4, 1.0e-3]),
], ids=["sweep_seed", "space"])
def test_changing_the_space_or_the_seed_retrains_the_variants_and_nothing_else(run_dir, edit):
    jobs = planned_jobs(run_dir, configfile=write_config(run_dir, "edited", sweep_config(edit)))
    assert jobs["finetune"] == len(VARIANTS)
    assert jobs["evaluate"] == len(VARIANTS) + 2  # each variant and the two soups (one job per model)
    assert not {"merge_model_stock", "build_zeroshot", "pretrain_demo", "split_heldout"} & set(jobs)


def test_a_bad_space_stops_the_workflow_before_any_job_naming_the_key(run_dir):
    before = {p: p.stat().st_mtime_ns for p in (results(run_dir) / "models").rglob("*") if p.is_file()}
    bad = sweep_config(lambda c: c["sweep"]["space"].update(lr={"log_uniform": [1.0e-3, 1.0e-5]}))
    proc = snakemake(run_dir, "--cores", "2", configfile=write_config(run_dir, "bad", bad), check=False)
    assert proc.returncode != 0
    assert "sweep.space.lr.log_uniform: low 0.001 > high 1e-05" in proc.stdout + proc.stderr
    assert {p: p.stat().st_mtime_ns for p in (results(run_dir) / "models").rglob("*") if p.is_file()} == before
