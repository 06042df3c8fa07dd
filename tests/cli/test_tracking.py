"""init-mlflow and log-mlflow against a real sqlite MLflow store (no mocks).

Commands run in forked processes: MLflow caches one store (and its sqlite connection pool) per URI
in each process, so sharing a store with the pytest process across a fork would be unsafe, and
separate processes are what Snakemake runs anyway. Forking after ``import mlflow`` saves its 1.6 s
import in every child.
"""

import json
import multiprocessing
import shutil
import sys

import mlflow  # noqa: F401  (imported once here, inherited by the forked children)
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from clipmerge.cli import main

ID, SHIFTS = "test", ["v2", "r", "sketch"]
MODELS = ["zeroshot", "finetune_seed0", "finetune_seed1", "finetune_seed2", "uniform_soup", "greedy_soup",
          "model_stock", "wise_ft_a0.5"]
STEPS = 30
PARAMS = {"lr", "weight_decay", "epochs", "batch_size", "label_smoothing", "mixup_alpha", "randaugment_ops",
          "randaugment_magnitude", "alpha", "seed", "variant", "num_ingredients"}


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def top1(model_index, set_index):
    return 40.0 + 3.5 * model_index - 2.25 * set_index


def write_model(root, i, model):
    seed = int(model[-1]) if model.startswith("finetune") else None
    hparams = {"lr": 1e-4, "weight_decay": 0.1, "epochs": 2, "batch_size": 64} if seed is not None else {}
    ingredients = {"zeroshot": [], "wise_ft_a0.5": ["zeroshot", "finetune_seed0"]}.get(
        model, ["zeroshot"] if seed is not None else ["finetune_seed0", "finetune_seed1", "finetune_seed2"])
    mdir = root / "models" / model
    write_json(mdir / "meta.json", {"model": model, "method": model.rstrip("0123456789").removesuffix("_seed"),
                                    "arch": "tiny", "pretrained": "demo", "seed": seed,
                                    "ingredients": ingredients, "hparams": hparams, "git_sha": "abc"})
    if seed is not None:
        rows = [{"step": s, "epoch": 0, "loss": 2.0 - s / STEPS, "lr": 1e-4, "train_top1": float(s),
                 "images_per_s": 50.0, "elapsed_s": 2.0 * s} for s in range(STEPS)]
        (mdir / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if model == "model_stock":
        write_json(mdir / "merge.json", {"tensors": {"visual.w": {"cos": 0.3, "angle_deg": 72.5, "t": 0.46}}})
    evals = []
    for j, eval_set in enumerate([ID, *SHIFTS]):
        path = root / "eval" / model / f"{eval_set}.json"
        write_json(path, {"model": model, "eval_set": eval_set, "adapter": "x", "top1": top1(i, j),
                          "top5": top1(i, j) + 20, "n": 100})
        evals.append(str(path))
    return evals


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory):
    """An empty store with the schema migrated once: copying it saves each test the 1-5 s migration."""
    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    proc = multiprocessing.get_context("fork").Process(target=_migrate, args=(f"sqlite:///{db}",))
    proc.start()
    proc.join(timeout=300)
    assert proc.exitcode == 0
    return db


def _migrate(uri):
    MlflowClient(uri).search_experiments()


@pytest.fixture
def study(tmp_path, monkeypatch, migrated_db):
    """A study with 8 models, an initialised store and its receipt; returns (root, evals, receipt, uri)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # init-mlflow gets a relative sqlite path, as in the workflow
    root = tmp_path / "results" / "demo"
    evals = {m: write_model(root, i, m) for i, m in enumerate(MODELS)}
    shutil.copyfile(migrated_db, root / "mlflow.db")
    receipt = root / "tracking" / "receipt.json"
    init = ["init-mlflow", "--tracking-uri", "sqlite:///results/demo/mlflow.db", "--experiment", "clipmerge/demo",
            "--out", str(receipt)]
    assert run_forked([init]) == [0]
    return root, evals, receipt, json.loads(receipt.read_text())["tracking_uri"]


def _child(argv):
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    # SQLAlchemy's rule after a fork: drop (without closing) the parent's pooled connections.
    for engine in SqlAlchemyStore._engine_map.values():
        engine.dispose(close=False)
    sys.exit(main(argv))


def run_forked(commands):
    """Run ``clipmerge <argv>`` for each argv at the same time, each in its own process; exit codes."""
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_child, args=(argv,)) for argv in commands]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    return [p.exitcode for p in procs]


def model_files(root, model):
    """The --meta/--history/--diagnostics flags of a model's files under results/<study>/models/."""
    mdir = root / "models" / model
    flags = ["--meta", str(mdir / "meta.json")]
    if (mdir / "history.jsonl").is_file():
        flags += ["--history", str(mdir / "history.jsonl")]
    if (mdir / "merge.json").is_file():
        flags += ["--diagnostics", str(mdir / "merge.json")]
    return flags


def log_cmd(root, evals, receipt, model, *extra):
    return ["log-mlflow", "--receipt", str(receipt), "--study", root.name, *model_files(root, model),
            "--evals", *evals[model], "--id", ID, "--shifts", *SHIFTS, "--config-hash", "cfg1",
            "--out", str(root / "tracking" / f"{model}.json"), *extra]


def active_runs(uri, experiment_id):
    return MlflowClient(uri).search_runs([experiment_id], run_view_type=ViewType.ACTIVE_ONLY)


def test_init_creates_a_fresh_store_idempotently(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    receipt = tmp_path / "receipt.json"
    init = ["init-mlflow", "--tracking-uri", "sqlite:///results/demo/mlflow.db", "--experiment", "clipmerge/demo",
            "--out", str(receipt)]
    assert run_forked([init]) == [0]
    first = json.loads(receipt.read_text())
    uri = first["tracking_uri"]
    assert uri == f"sqlite:///{tmp_path / 'results' / 'demo' / 'mlflow.db'}"  # made absolute
    assert run_forked([init]) == [0]
    assert json.loads(receipt.read_text()) == first
    experiment = MlflowClient(uri).get_experiment(first["experiment_id"])
    assert experiment.name == "clipmerge/demo"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.artifact_location == (tmp_path / "results" / "demo" / "mlartifacts").as_uri()


def test_parallel_writers_lose_and_misfile_nothing(study):
    root, evals, receipt, uri = study
    experiment_id = json.loads(receipt.read_text())["experiment_id"]
    assert run_forked([log_cmd(root, evals, receipt, m) for m in MODELS]) == [0] * len(MODELS)

    client = MlflowClient(uri)
    everywhere = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(everywhere) == len(MODELS)  # nothing filed in the Default experiment
    runs = {r.info.run_name: r for r in active_runs(uri, experiment_id)}
    assert sorted(runs) == sorted(MODELS)
    for i, model in enumerate(MODELS):
        run = runs[model]
        receipt_out = json.loads((root / "tracking" / f"{model}.json").read_text())
        assert receipt_out["run_id"] == run.info.run_id and receipt_out["action"] == "created"
        assert run.info.status == "FINISHED"
        assert run.data.tags["result_key"] == f"demo/{model}" and run.data.tags["config_hash"] == "cfg1"
        assert set(run.data.params) == PARAMS
        assert all(float(v) == float(v) for v in run.data.params.values())  # numeric-looking
        expected = {f"top1/{s}": top1(i, j) for j, s in enumerate([ID, *SHIFTS])}
        expected |= {f"top5/{s}": top1(i, j) + 20 for j, s in enumerate([ID, *SHIFTS])}
        expected |= {"top1/id": top1(i, 0), "top1/avg_shifts": sum(top1(i, j) for j in (1, 2, 3)) / 3}
        summary = {k: v for k, v in run.data.metrics.items() if not k.startswith("train/")}
        assert summary == pytest.approx(expected)
        artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
        assert artifacts == ({"meta.json", "merge.json"} if model == "model_stock" else {"meta.json"})
        if model.startswith("finetune"):
            loss = client.get_metric_history(run.info.run_id, "train/loss")
            assert [(m.step, m.value) for m in loss] == [(s, 2.0 - s / STEPS) for s in range(STEPS)]
    assert runs["wise_ft_a0.5"].data.params["alpha"] == "0.5"
    assert runs["zeroshot"].data.params == {"lr": "0", "weight_decay": "0", "epochs": "0", "batch_size": "0",
                                                 "label_smoothing": "0", "mixup_alpha": "0",
                                                 "randaugment_ops": "0", "randaugment_magnitude": "0",
                                                 "alpha": "-1", "seed": "-1", "variant": "-1",
                                                 "num_ingredients": "0"}


def test_relog_is_idempotent_and_a_changed_result_replaces_the_run(study):
    root, evals, receipt, uri = study
    experiment_id = json.loads(receipt.read_text())["experiment_id"]
    out = root / "tracking" / "finetune_seed1.json"
    cmd = log_cmd(root, evals, receipt, "finetune_seed1")
    assert run_forked([cmd]) == [0]
    first = json.loads(out.read_text())
    assert run_forked([cmd]) == [0]
    again = json.loads(out.read_text())
    assert (again["run_id"], again["action"]) == (first["run_id"], "unchanged")
    runs = active_runs(uri, experiment_id)
    assert len(runs) == 1
    assert len(MlflowClient(uri).get_metric_history(first["run_id"], "top1/id")) == 1

    # Snakemake reran the evaluation: the run is rebuilt, params and all, and the old one deleted.
    changed = root / "eval" / "finetune_seed1" / "v2.json"
    changed.write_text(json.dumps(json.loads(changed.read_text()) | {"top1": 12.5}))
    assert run_forked([cmd]) == [0]
    replaced = json.loads(out.read_text())
    assert replaced["action"] == "replaced" and replaced["run_id"] != first["run_id"]
    [run] = active_runs(uri, experiment_id)
    assert run.info.run_id == replaced["run_id"] and run.data.metrics["top1/v2"] == 12.5
    assert MlflowClient(uri).get_run(first["run_id"]).info.lifecycle_stage == "deleted"


def test_a_half_written_run_is_replaced(study):
    root, evals, receipt, uri = study
    experiment_id = json.loads(receipt.read_text())["experiment_id"]
    # A writer that died after creating the run never set result_sha.
    client = MlflowClient(uri)
    dead = client.create_run(experiment_id, run_name="zeroshot", tags={"result_key": "demo/zeroshot"}).info.run_id
    assert run_forked([log_cmd(root, evals, receipt, "zeroshot")]) == [0]
    [run] = active_runs(uri, experiment_id)
    assert run.info.run_id != dead and "result_sha" in run.data.tags


def test_summary_run_attaches_files_and_links_the_compare_view(study, tmp_path):
    root, evals, receipt, uri = study
    assert run_forked([log_cmd(root, evals, receipt, m) for m in ("zeroshot", "model_stock")]) == [0, 0]
    (root / "tables").mkdir()
    (root / "tables" / "comparison.csv").write_text("model,test\nzeroshot,40.0\n")
    (root / "plots").mkdir()
    (root / "plots" / "id_vs_shifts.png").write_bytes(b"\x89PNG fake")
    out = root / "tracking" / "summary.json"
    cmd = ["log-mlflow", "--summary", "--receipt", str(receipt), "--artifacts", str(root / "tables/comparison.csv"),
           str(root / "plots/id_vs_shifts.png"), "--out", str(out)]
    assert run_forked([cmd]) == [0]

    summary = json.loads(out.read_text())
    client = MlflowClient(uri)
    assert client.get_run(summary["run_id"]).data.tags["role"] == "summary"
    listed = {f.path for folder in ("tables", "plots") for f in client.list_artifacts(summary["run_id"], folder)}
    assert listed == {"tables/comparison.csv", "plots/id_vs_shifts.png"}
    model_ids = [json.loads((root / "tracking" / f"{m}.json").read_text())["run_id"]
                 for m in ("zeroshot", "model_stock")]
    runs_json = "%5B" + "%2C".join(f"%22{r}%22" for r in model_ids) + "%5D"
    assert summary["compare_url"] == ("http://127.0.0.1:5000/#/compare-runs?runs=" + runs_json
                                      + f"&experiments=%5B%22{summary['experiment_id']}%22%5D")
    assert summary["runs_url"].endswith(f"/#/experiments/{summary['experiment_id']}/runs?workflowType=machine_learning")


def test_a_receipt_from_another_store_is_refused(study, monkeypatch, capsys):
    root, evals, receipt, _ = study
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert main(log_cmd(root, evals, receipt, "zeroshot")) == 2
    assert "rerun init-mlflow" in capsys.readouterr().err


def test_lockstep_history_gets_one_curve_per_seed():
    from clipmerge.tracking.runs import history_curves

    rows = [{"step": 1, "seed": 0, "loss": 2.0, "lr": 0.1, "train_top1": None, "elapsed_s": 1.5},
            {"step": 1, "seed": 1, "loss": 3.0, "lr": 0.1, "elapsed_s": 2.0}]
    assert history_curves(rows) == [("train/loss/seed0", 2.0, 1500, 1), ("train/lr/seed0", 0.1, 1500, 1),
                                    ("train/loss/seed1", 3.0, 2000, 1), ("train/lr/seed1", 0.1, 2000, 1)]
