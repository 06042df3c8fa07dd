"""Dry runs: lint, the demo and paper-scale DAGs, and what a config change reruns (no jobs executed)."""

import shutil

import yaml
from snakemake_runner import REPO, planned_jobs, snakemake


def test_lint_is_clean():
    proc = snakemake(REPO, "--lint", configfile=None)
    assert "Lints for" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_demo_dag_plans_every_stage(tmp_path):
    jobs = planned_jobs(tmp_path, configfile=REPO / "config" / "config.yaml")
    models = 1 + 4 + 4 + 3  # zeroshot, 4 seeds, uniform/greedy/stock/periodic, 3 WiSE-FT alphas
    assert jobs["evaluate"] == models  # eval.jobs: per_model, each writing its 6 result files
    assert jobs["finetune"] == 4 and jobs["log_mlflow"] == 1  # mlflow.jobs: per_study
    for rule in ("make_world", "pretrain_demo", "build_zeroshot", "split_heldout", "merge_model_stock",
                 "merge_uniform_soup", "greedy_soup", "model_stock_periodic", "compile_table", "plot_results",
                 "init_mlflow", "ensemble", "all"):
        assert jobs[rule] == 1, rule
    assert jobs["merge_wise_ft"] == 3
    assert "cache_eval_set" not in jobs and "log_summary" not in jobs
    assert sum(jobs.values()) == 33


def test_the_sweep_demo_is_an_overlay_on_the_demo(tmp_path):
    """make demo-sweep: config/sweep.yaml merged over config/config.yaml; 2 seeds and 4 variants."""
    jobs = planned_jobs(tmp_path, "--configfile", str(REPO / "config" / "config.yaml"),
                        str(REPO / "config" / "sweep.yaml"), configfile=None)
    assert jobs["finetune"] == 2 + 4 and "model_stock_periodic" not in jobs
    assert jobs["evaluate"] == 1 + 6 + 3 + 1  # zeroshot, the fine-tunes, soups and Model Stock, WiSE-FT 0.5
    assert jobs["merge_uniform_soup"] == jobs["greedy_soup"] == jobs["merge_model_stock"] == jobs["ensemble"] == 1


def paper_config(tmp_path, seeds=4):
    config = yaml.safe_load((REPO / "config" / "imagenet.yaml").read_text())
    for spec in [config["train"]["data"], *config["eval"]["sets"].values()]:
        (tmp_path / spec["root"]).mkdir(parents=True, exist_ok=True)
    config["finetune"]["seeds"] = list(range(seeds))
    path = tmp_path / "imagenet.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_paper_scale_dag_plans_from_dataset_roots(tmp_path):
    jobs = planned_jobs(tmp_path, configfile=paper_config(tmp_path))
    assert jobs["fetch_pretrained"] == 1 and "make_world" not in jobs and "pretrain_demo" not in jobs
    assert jobs["evaluate"] == (1 + 4 + 5) * 6  # zeroshot, 4 fine-tunes, 4 merges + WiSE-FT 0.5; per set
    assert jobs["cache_eval_set"] == 6  # each set decoded once for the 10 models
    assert jobs["ensemble"] == 1  # from the fine-tunes' saved predictions: no evaluation of its own
    assert jobs["log_mlflow"] == 11 and jobs["log_summary"] == 1  # the 10 models and the ensemble


def test_model_soups_dag_imports_72_files_and_trains_nothing(tmp_path):
    """config/model_soups_vit_b32.yaml as shipped, its downloads present (empty files: a dry run reads
    only hparam_info.json): 72 conversions, the four merges, every model on the six sets."""
    import json

    config = yaml.safe_load((REPO / "config" / "model_soups_vit_b32.yaml").read_text())
    for spec in [config["train"]["data"], *config["eval"]["sets"].values()]:
        (tmp_path / spec["root"]).mkdir(parents=True, exist_ok=True)
    names = config["imports"]["names"]
    assert names == [f"model_{i}" for i in range(72)]
    downloads = tmp_path / "downloads" / "model-soups"
    downloads.mkdir(parents=True)
    for name in names:
        (downloads / f"{name}.pt").touch()
    (downloads / "imagenet_98_idxs.npy").touch()
    (downloads / "hparam_info.json").write_text(json.dumps({n: {"lr": 1e-5} for n in names}))
    shutil.copy(REPO / "config" / "model_soups_vit_b32.yaml", tmp_path / "soups.yaml")
    jobs = planned_jobs(tmp_path, configfile=tmp_path / "soups.yaml")
    assert jobs["import_model"] == 72 and "finetune" not in jobs and "model_stock_periodic" not in jobs
    for rule in ("fetch_pretrained", "build_zeroshot", "split_heldout", "merge_uniform_soup", "greedy_soup",
                 "merge_model_stock", "merge_wise_ft"):
        assert jobs[rule] == 1, rule
    assert jobs["evaluate"] == (1 + 72 + 4) * 6 and jobs["log_mlflow"] == 77 + 1  # + the ensemble of the 72


def test_missing_dataset_root_stops_before_any_job(tmp_path):
    config = paper_config(tmp_path)
    shutil.rmtree(tmp_path / "datasets" / "imagenet-a")
    proc = snakemake(tmp_path, "-n", configfile=config, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "eval.sets.imagenet_a.root: 'datasets/imagenet-a' does not exist" in out
    assert "200 wnid folders" in out and not (tmp_path / "results").exists()


def test_unknown_config_key_is_named(tmp_path):
    config = yaml.safe_load((REPO / "tests" / "workflow" / "tiny.yaml").read_text())
    config["finetune"]["learning_rate"] = 0.1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "-n", configfile=path, check=False)
    assert proc.returncode != 0 and "'learning_rate' was unexpected" in proc.stdout + proc.stderr
