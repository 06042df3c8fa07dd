"""`snakemake --profile slurm` on a real single-node SLURM cluster (tests/slurm/slurm-up.sh).

The tiny config's whole DAG runs through sbatch with the shipped profile; sacct shows which rules went
through SLURM, on which partition and with which GPUs; the results equal a local run's. On CPU every
stage is deterministic (seeded data order and augmentation, deterministic kernels, same machine and
thread count), so the eval JSONs and every model tensor must be identical; what differs by design is
timing (history.jsonl throughput, the table's cost column), MLflow run ids and the git sha in meta.json
if the tree moved between the runs. These are not compared.

Needs root and a running cluster: .ci/run brings it up and sets CLIPMERGE_SLURM_TESTS=1.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from clipmerge.training import resume

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "tests" / "workflow" / "tiny.yaml"
BIN = Path(sys.executable).parent
# What the test cluster offers (slurm-up.sh): partitions cpu and gpu, GPUs of type "fake".
CLUSTER_ENV = {"SLURM_ACCOUNT": "root", "SLURM_PARTITION": "cpu", "SLURM_GPU_PARTITION": "gpu",
               "SLURM_GPU_MODEL": "fake"}
# common.smk's localrules, and the ensemble's (evaluate.smk: it averages saved predictions, no model)
LOCAL_RULES = {"all", "init_mlflow", "log_mlflow", "log_summary", "compile_table", "plot_results", "ensemble"}
GPU_RULES = {"finetune", "model_stock_periodic", "greedy_soup", "evaluate"}
EVAL_GROUP = "evaluate_evaluate"  # the plugin names a group job <group id>_<its rules>
EVALS_PER_GROUP = 6  # group-components in slurm/config.yaml
RUN_TIMEOUT = 20 * 60

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the test cluster runs as root)"),
    pytest.mark.skipif(os.environ.get("CLIPMERGE_SLURM_TESTS") != "1",
                       reason="no test cluster: run tests/slurm/slurm-up.sh, then set CLIPMERGE_SLURM_TESTS=1"),
]


def command(*args: str, slurm: bool) -> tuple[list[str], dict]:
    """The Snakemake command line and environment for the cluster (shipped profile) or a local run."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # jobs inherit PATH (--export=ALL)
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), *args]
    if slurm:
        env.update(CLUSTER_ENV)
        # Test-only overrides: the first status check 2 s after a submission instead of the plugin's 40 s;
        # and the rules' own 1 thread instead of the profile's 8 for GPU nodes, as in the local run: Snakemake
        # sets OMP_NUM_THREADS to a job's threads, and on CPU torch's thread count changes float rounding.
        cmd += ["--profile", str(REPO / "slurm"), "--slurm-init-seconds-before-status-checks", "2",
                "--set-threads", *(f"{rule}=1" for rule in sorted(GPU_RULES))]
    else:
        cmd += ["--cores", "2"]
    return cmd, env


def snakemake(workdir: Path, *args: str, slurm: bool) -> tuple[subprocess.CompletedProcess, float]:
    """Run the workflow in `workdir`; return (process, seconds). Jobs left in the queue are cancelled."""
    cmd, env = command(*args, slurm=slurm)
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    finally:
        if slurm:
            cancel_jobs_of(workdir)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc, time.monotonic() - start


def now() -> str:
    """A sacct --starttime a second in the past."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 1))


def wait_for(condition, what: str, timeout: float = 300):
    """Poll `condition` every 0.5 s until it returns something truthy; return that."""
    end = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < end, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.5)
    return value


def sacct_jobs(workdir: Path, since: str) -> list[dict]:
    """Allocations (not steps) submitted since `since` from `workdir`."""
    fields = ["JobID", "Comment", "Partition", "State", "AllocTRES", "WorkDir"]
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-S", since, "-o", ",".join(fields)],
                         capture_output=True, text=True, check=True).stdout
    jobs = [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines()]
    return [job for job in jobs if job["WorkDir"] == str(workdir)]


def job_name(comment: str) -> str:
    """rule_<rule>_wildcards_<values> (or rule_<group job name>) -> the rule or group job name."""
    return re.fullmatch(r"rule_(.+?)(_wildcards_.*)?", comment).group(1)


def job_counts(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """{rule: jobs} from Snakemake's "Job stats" table."""
    stats = (proc.stdout + proc.stderr).split("Job stats:", 1)[1]
    counts = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.M)}
    counts.pop("total")
    return counts


def queued_jobs(workdir: Path, state: str = "") -> list[str]:
    """Ids of the jobs in the queue that were submitted from `workdir` (squeue %Z), optionally in `state`."""
    queue = subprocess.run(["squeue", "-h", "-o", "%i %T %Z"], capture_output=True, text=True, check=True).stdout
    return [job for job, st, wd in map(str.split, queue.splitlines()) if wd == str(workdir) and state in ("", st)]


def cancel_jobs_of(workdir: Path) -> None:
    """Leave no job of this test in the queue, whatever happened."""
    if ids := queued_jobs(workdir):
        subprocess.run(["scancel", *ids], check=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny DAG once through SLURM and once locally, with sacct's record of the SLURM run."""
    slurm_dir, local_dir = tmp_path_factory.mktemp("slurm"), tmp_path_factory.mktemp("local")
    since = now()
    _, slurm_s = snakemake(slurm_dir, "--configfile", str(TINY_CONFIG), slurm=True)
    local_proc, local_s = snakemake(local_dir, "--configfile", str(TINY_CONFIG), slurm=False)
    jobs = sacct_jobs(slurm_dir, since)
    print(f"\ntiny DAG: SLURM {slurm_s:.0f} s in {len(jobs)} sbatch jobs, local --cores 2 {local_s:.0f} s")
    return {"slurm": slurm_dir, "local": local_dir, "jobs": jobs, "counts": job_counts(local_proc)}


def test_every_non_local_job_went_through_slurm(runs):
    counts, jobs = runs["counts"], runs["jobs"]
    expected = {rule: n for rule, n in counts.items() if rule not in LOCAL_RULES | {"evaluate"}}
    expected[EVAL_GROUP] = math.ceil(counts["evaluate"] / EVALS_PER_GROUP)
    assert Counter(job_name(job["Comment"]) for job in jobs) == expected
    assert {job["State"] for job in jobs} == {"COMPLETED"}


def gpus_of(job: dict) -> int:
    tres = dict(item.split("=", 1) for item in job["AllocTRES"].split(",") if "=" in item)
    return int(tres.get("gres/gpu", 0))


def test_gpu_jobs_got_their_gpus_on_the_gpu_partition(runs):
    for job in runs["jobs"]:
        name = job_name(job["Comment"])
        gpu = name in (GPU_RULES - {"evaluate"}) | {EVAL_GROUP}
        assert job["Partition"] == ("gpu" if gpu else "cpu"), job
        # one GPU per seed for periodic Model Stock (tiny.yaml: 2 seeds), else one per job, also for a
        # group of evaluations (they run one at a time: eval_slot is a per-job pool in the profile)
        assert gpus_of(job) == (2 if name == "model_stock_periodic" else int(gpu)), job
    log = (runs["slurm"] / "logs/tiny/merge/model_stock_periodic.log").read_text()
    assert "starting 2 ranks" in log and "rank 1 of 2 (gloo, cpu)" in log


def results_files(root: Path) -> set[str]:
    """Paths under results/, with MLflow's random run ids blanked."""
    return {re.sub(r"mlartifacts/[0-9a-f]{32}/", "mlartifacts/<run>/", str(p.relative_to(root)))
            for p in (root / "results").rglob("*") if p.is_file()}


def assert_same_weights(a: Path, b: Path) -> None:
    with safe_open(a, "pt") as x, safe_open(b, "pt") as y:
        assert set(x.keys()) == set(y.keys())
        assert [k for k in x.keys() if not torch.equal(x.get_tensor(k), y.get_tensor(k))] == [], a


def test_results_equal_a_local_run(runs):
    slurm, local = runs["slurm"], runs["local"]
    files = results_files(local)
    assert results_files(slurm) == files
    evals = sorted(f for f in files if f.startswith("results/tiny/eval/") and f.endswith(".json"))
    sets = len(yaml.safe_load(TINY_CONFIG.read_text())["eval"]["sets"])
    # one per evaluate job (tiny.yaml: one job per model and set), and the ensemble's from its own rule
    assert len(evals) == runs["counts"]["evaluate"] + runs["counts"]["ensemble"] * sets
    for f in evals:
        assert json.loads((slurm / f).read_text()) == json.loads((local / f).read_text()), f
    for f in sorted(f for f in files if f.endswith(".safetensors")):
        assert_same_weights(slurm / f, local / f)


def copy_inputs(runs, *workdirs: Path) -> None:
    """The fine-tunes' inputs from the DAG run, one mtime newer than any source: only training reruns."""
    copied = time.time()
    for work in workdirs:
        for part in ("data", "splits", "pretrained", "models/zeroshot"):
            shutil.copytree(runs["slurm"] / "results/tiny" / part, work / "results/tiny" / part)
        for path in (work / "results").rglob("*"):
            os.utime(path, (copied, copied))




def test_a_two_gpu_finetune_runs_two_ranks_in_one_job_and_equals_one_process(runs, tmp_path):
    """finetune.gpus: 2 -> one sbatch job with --gpus=2 whose command starts 2 torchrun ranks (gloo here:
    the fake GPUs have no CUDA). With 2 micro-batches per step (one per rank) the weights equal one
    process's exactly (tests/cli/test_distributed.py), so the local reference trains with gpus: 1."""
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["finetune"].update(accum_steps=2, gpus=2)
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(config))
    config["finetune"]["gpus"] = 1
    (tmp_path / "single.yaml").write_text(yaml.safe_dump(config))
    model = "results/tiny/models/finetune_seed0/model.safetensors"
    slurm_dir, local_dir = tmp_path / "slurm", tmp_path / "local"
    copy_inputs(runs, slurm_dir, local_dir)
    since = now()
    snakemake(slurm_dir, model, "--configfile", str(tmp_path / "ddp.yaml"), slurm=True)
    snakemake(local_dir, model, "--configfile", str(tmp_path / "single.yaml"), slurm=False)
    (job,) = [j for j in sacct_jobs(slurm_dir, since) if job_name(j["Comment"]) == "finetune"]
    assert job["State"] == "COMPLETED" and gpus_of(job) == 2, job
    log = (slurm_dir / "logs/tiny/finetune/finetune_seed0.log").read_text()
    assert "starting 2 ranks" in log and "rank 1 of 2 (gloo, cpu)" in log
    assert_same_weights(slurm_dir / model, local_dir / model)


def test_srun_tasks_are_ranks(tmp_path):
    """`srun -n 2 clipmerge finetune` (no torchrun): each task finds its rank, the world size and the master
    in SLURM's variables, and the result equals one process's."""
    sys.path.insert(0, str(REPO / "tests"))
    from fixtures.training import make_tiny_task

    task = make_tiny_task(tmp_path / "task")

    def finetune(out: Path) -> list[str]:
        return [str(BIN / "python"), "-m", "clipmerge", "finetune", "--init", str(task["init"]), "--train-root",
                str(task["train"]), "--heldout", str(task["heldout"]), "--out", str(out / "model.safetensors"),
                "--seed", "0", "--steps", "4", "--batch-size", "8", "--accum-steps", "2", "--warmup-steps", "1",
                "--workers", "0", "--device", "cpu"]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    srun = subprocess.run(["srun", "-n", "2", "-c", "1", "-p", "cpu", "-t", "10", "--export=ALL",
                           *finetune(tmp_path / "srun")], env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert srun.returncode == 0, srun.stderr[-4000:]
    assert "rank 1 of 2 (gloo, cpu)" in srun.stderr
    subprocess.run(finetune(tmp_path / "single"), env=env, check=True, capture_output=True, timeout=RUN_TIMEOUT)
    assert_same_weights(tmp_path / "srun/model.safetensors", tmp_path / "single/model.safetensors")


def test_a_signalled_finetune_resumes_in_its_retry_and_ends_with_the_same_weights(runs, tmp_path):
    """What a time limit or a preemption does to a training job: SIGTERM to the job's processes
    (as --signal=TERM@300 and SLURM's kill sequence send it), the fine-tune saves its state and fails,
    the profile's retries resubmit it, and it resumes. More epochs than tiny.yaml so that it is still
    training when signalled; the reference is the same config run locally without interruption."""
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["finetune"]["epochs"] = 16  # 48 steps: seconds of training left after the first checkpoint
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(config))
    model_dir = "results/tiny/models/finetune_seed0"
    args = (f"{model_dir}/model.safetensors", "--configfile", str(tmp_path / "long.yaml"))
    slurm_dir, local_dir = tmp_path / "slurm", tmp_path / "local"
    copy_inputs(runs, slurm_dir, local_dir)

    since = now()
    cmd, env = command(*args, slurm=True)
    log = tmp_path / "snakemake.log"
    with open(log, "w") as out, subprocess.Popen(cmd, cwd=slurm_dir, env=env, stdout=out, stderr=out) as proc:
        def while_running(check):
            def condition():
                assert proc.poll() is None, f"snakemake stopped early:\n{log.read_text()[-6000:]}"
                return check()
            return condition

        try:
            # only the fine-tune writes train_state/, so once it holds a checkpoint the running job is the fine-tune
            wait_for(while_running(lambda: resume.latest_step(slurm_dir / model_dir / "train_state")),
                     "a first checkpoint")
            job = wait_for(while_running(lambda: queued_jobs(slurm_dir, "RUNNING")), "the fine-tune job")[0]
            subprocess.run(["scancel", "--signal=TERM", job], check=True)  # to the job's steps, not its batch shell
            proc.wait(timeout=RUN_TIMEOUT)
        finally:
            proc.kill()
            cancel_jobs_of(slurm_dir)
    assert proc.returncode == 0, log.read_text()[-6000:]
    states = [j["State"] for j in sacct_jobs(slurm_dir, since) if job_name(j["Comment"]) == "finetune"]
    assert states == ["FAILED", "COMPLETED"]  # attempt 1 stopped by the signal, attempt 2 resumed
    assert "resumed from" in (slurm_dir / "logs/tiny/finetune/finetune_seed0.log").read_text()

    snakemake(local_dir, *args, slurm=False)
    assert_same_weights(slurm_dir / model_dir / "model.safetensors", local_dir / model_dir / "model.safetensors")
    losses = [[json.loads(line)["loss"] for line in (work / model_dir / "history.jsonl").read_text().splitlines()]
              for work in (slurm_dir, local_dir)]
    assert losses[0] == losses[1] and len(losses[0]) > 2
