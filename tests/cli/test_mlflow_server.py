"""A real `mlflow server` on 127.0.0.1: the workflow logs through its REST API and the runs come back."""

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from clipmerge.cli import main
from clipmerge.tracking.store import start_mlflow_server

ID, SHIFTS = "test", ["v2", "r"]
MODELS = ["zeroshot", "finetune_seed0", "model_stock"]
READY_TIMEOUT_S = 120  # ~15 s on an idle 2-core machine, several times that when it is shared
MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def write_model(root, i, model):
    mdir = root / "models" / model
    mdir.mkdir(parents=True)
    seed = 0 if model == "finetune_seed0" else None
    (mdir / "meta.json").write_text(json.dumps({
        "model": model, "method": model.removesuffix("_seed0"), "arch": "tiny", "pretrained": "demo",
        "seed": seed, "ingredients": [], "hparams": {}, "git_sha": "abc"}))
    if seed is not None:
        (mdir / "history.jsonl").write_text("".join(
            json.dumps({"step": s, "epoch": 0, "loss": 1.0 / (s + 1), "lr": 1e-4, "train_top1": 10.0 * s,
                        "images_per_s": 5.0, "elapsed_s": float(s)}) + "\n" for s in range(5)))
    paths = []
    for j, eval_set in enumerate([ID, *SHIFTS]):
        path = root / "eval" / model / f"{eval_set}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"model": model, "eval_set": eval_set, "adapter": "x", "top1": 50.0 + i + j,
                                    "top5": 90.0, "n": 10}))
        paths.append(str(path))
    return paths


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base, proc, log_path):
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow server not healthy after {READY_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")


def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def run_forked(commands):
    """``clipmerge <argv>`` for each argv at once, each in its own process (as Snakemake jobs are)."""
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=lambda argv=argv: sys.exit(main(argv))) for argv in commands]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    return [p.exitcode for p in procs]


def model_files(root, model):
    """The --meta (and, for a training run, --history) flags of a model's files."""
    mdir = root / "models" / model
    history = ["--history", str(mdir / "history.jsonl")] if (mdir / "history.jsonl").is_file() else []
    return ["--meta", str(mdir / "meta.json"), *history]


@pytest.mark.slow
def test_workflow_logs_through_a_local_server_and_runs_search_returns_them(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "results" / "demo"
    evals = {m: write_model(root, i, m) for i, m in enumerate(MODELS)}
    port, log_path = free_port(), tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    proc = start_mlflow_server(root / "mlflow.db", port, MLFLOW, log_path)
    try:
        wait_healthy(base, proc, log_path)
        receipt = root / "tracking" / "receipt.json"
        assert run_forked([["init-mlflow", "--tracking-uri", base, "--experiment", "clipmerge/demo",
                            "--out", str(receipt)]]) == [0]
        experiment_id = json.loads(receipt.read_text())["experiment_id"]
        assert run_forked([
            ["log-mlflow", "--receipt", str(receipt), "--study", root.name, *model_files(root, m),
             "--evals", *evals[m], "--id", ID, "--shifts", *SHIFTS, "--out", str(root / "tracking" / f"{m}.json")]
            for m in MODELS
        ]) == [0] * len(MODELS)

        found = post(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id], "max_results": 100})
        runs = {r["info"]["run_name"]: r for r in found["runs"]}
        assert sorted(runs) == sorted(MODELS)
        for i, model in enumerate(MODELS):
            metrics = {m["key"]: m["value"] for m in runs[model]["data"]["metrics"]}
            assert metrics["top1/id"] == 50.0 + i
            assert metrics["top1/avg_shifts"] == pytest.approx(50.0 + i + 1.5)
            assert {t["key"]: t["value"] for t in runs[model]["data"]["tags"]}["result_key"] == f"demo/{model}"
            out = json.loads((root / "tracking" / f"{model}.json").read_text())
            assert out["run_url"] == f"{base}/#/experiments/{experiment_id}/runs/{runs[model]['info']['run_id']}"
        finetune_id = runs["finetune_seed0"]["info"]["run_id"]
        assert len(get(f"{base}/api/2.0/mlflow/metrics/get-history?run_id={finetune_id}&metric_key=train/loss")
                   ["metrics"]) == 5
        artifacts = get(f"{base}/api/2.0/mlflow/artifacts/list?run_id={finetune_id}")["files"]
        assert [f["path"] for f in artifacts] == ["meta.json"]  # uploaded through the server's artifact proxy
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server's uvicorn and job-runner children too
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
