"""The whole tiny DAG under parallel load, twice in a row: --cores 4 on this 2-core machine forces jobs to
overlap (fine-tunes, evaluations, concurrent MLflow writers). The second run does nothing and touches
no file; MLflow holds exactly one run per model, none replaced or deleted.

tests/workflow/test_full_run.py does the same DAG at --cores 2 with a dry-run no-op check; this module
shares one expensive run between its tests.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from snakemake_runner import TINY_CONFIG, snakemake

from clipmerge.workflow import plan

pytestmark = pytest.mark.slow

CORES = "4"
MODELS = plan.model_ids(yaml.safe_load(TINY_CONFIG.read_text()))


def file_states(workdir: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime in ns) of every file under results/ and logs/: a rerun that writes anything changes it."""
    return {str(p.relative_to(workdir)): (p.stat().st_size, p.stat().st_mtime_ns)
            for folder in ("results", "logs") for p in sorted((workdir / folder).rglob("*")) if p.is_file()}


def peak_concurrency(output: str) -> tuple[int, Counter]:
    """Most jobs running at once, and per rule the most of its jobs at once, from Snakemake's job log."""
    running: dict[str, str] = {}
    peak, per_rule, rule = 0, Counter(), None
    for line in output.splitlines():
        if m := re.match(r"(?:local)?rule (\w+):$", line):
            rule = m[1]
        elif (m := re.match(r"\s+jobid: (\d+)$", line)) and rule:
            running[m[1]] = rule
            rule = None
            peak = max(peak, len(running))
            counts = Counter(running.values())
            for name, n in counts.items():
                per_rule[name] = max(per_rule[name], n)
        elif m := re.match(r"Finished jobid: (\d+)", line):
            running.pop(m[1], None)
    return peak, per_rule


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("parallel")
    first = snakemake(workdir, "--cores", CORES)
    before = file_states(workdir)
    second = snakemake(workdir, "--cores", CORES)
    return SimpleNamespace(workdir=workdir, first=first.stdout + first.stderr,
                           second=second.stdout + second.stderr, before=before, after=file_states(workdir))


def test_jobs_really_ran_in_parallel(runs):
    peak, per_rule = peak_concurrency(runs.first)
    assert peak >= 3, per_rule  # more than --cores 2 would ever allow
    assert per_rule["log_mlflow"] >= 2 or per_rule["evaluate"] >= 2, per_rule


def test_second_run_does_nothing(runs):
    assert "Nothing to be done" in runs.second
    assert runs.after == runs.before


def test_mlflow_holds_exactly_one_run_per_model(runs):
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    results = runs.workdir / "results" / "tiny"
    receipt = json.loads((results / "tracking" / "mlflow.json").read_text())
    client = MlflowClient(receipt["tracking_uri"])
    every = client.search_runs([receipt["experiment_id"]], run_view_type=ViewType.ALL, max_results=1000)
    assert Counter(r.info.run_name for r in every) == Counter([*MODELS, "summary"])
    assert all(r.info.lifecycle_stage == "active" and r.info.status == "FINISHED" for r in every)
    by_name = {r.info.run_name: r for r in every}
    for model in MODELS:
        logged = json.loads((results / "tracking" / f"{model}.json").read_text())
        assert logged["run_id"] == by_name[model].info.run_id and logged["action"] == "created"
        assert by_name[model].data.tags["result_key"] == f"tiny/{model}"
        assert "result_sha" in by_name[model].data.tags  # written last: the run is complete
