"""Preemption through Snakemake: a training job killed at a random step resumes, on a rerun with
--rerun-incomplete (as the SLURM profile does), to weights torch.equal to an uninterrupted run's.

The signal goes to Snakemake's whole process group, as SLURM signals every process of a job: Snakemake,
the job's `bash -c` wrapper, `clipmerge` and its DataLoader workers. The training state lives in
models/<model>/train_state/, beside the rule's outputs but not one of them; these tests fail if Snakemake's
failed-job cleanup or --rerun-incomplete ever removes it (the rerun would then start from step 0 and the
"resumed from" line would be missing). The CLI-level resume test is tests/cli/test_finetune_cli.py.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from snakemake_runner import REPO, TINY_CONFIG, env, snakemake

from clipmerge.training import resume
from clipmerge.weights.checkpoint import load_weights

pytestmark = pytest.mark.slow

EVERY = 4  # checkpoint_every (and the periodic merge period)
TOTAL = 36  # 100 training images / batch 16 = 6 steps per epoch, 6 epochs
MODELS = {"finetune_seed0": "logs/tiny/finetune/finetune_seed0.log",
          "model_stock_periodic": "logs/tiny/merge/model_stock_periodic.log"}
# --cores 1: one job at a time on one thread (OMP_NUM_THREADS, --workers) in every run, so the kernels are
# the same, and no OpenMP spinning against other work on this 2-core machine.
RUN = ["--allowed-rules", "finetune", "model_stock_periodic", "--cores", "1", "--rerun-incomplete"]


def target(model: str) -> str:
    return f"results/tiny/models/{model}/model.safetensors"


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["finetune"].update(batch_size=16, epochs=6, checkpoint_every=EVERY)
    config["merge"]["model_stock_periodic"]["merge_every"] = EVERY
    path = tmp_path_factory.mktemp("config") / "preempt.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory, config) -> Path:
    """World, pre-training, zero-shot model and held-out split: the inputs every copy below shares."""
    workdir = tmp_path_factory.mktemp("base")
    snakemake(workdir, "--cores", "2", target("zeroshot"), "results/tiny/splits/heldout.txt", configfile=config)
    return workdir


def copy_run(base: Path, dest: Path) -> Path:
    shutil.copytree(base, dest, symlinks=True)  # keeps mtimes and .snakemake metadata: upstream stays done
    return dest


class Reference:
    """The uninterrupted runs of both models, trained in the background while the first test runs."""

    def __init__(self, workdir: Path, config: Path):
        self.workdir = workdir
        self.proc = start_snakemake(workdir, config, [target(m) for m in MODELS], workdir / "snakemake.log")

    def weights(self, model: str) -> Path:
        if self.proc.wait(timeout=1800) != 0:
            pytest.fail(f"reference run failed:\n{(self.workdir / 'snakemake.log').read_text()[-4000:]}")
        return self.workdir / target(model)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, base, config):
    ref = Reference(copy_run(base, tmp_path_factory.mktemp("ref") / "run"), config)
    yield ref
    if ref.proc.poll() is None:
        os.killpg(ref.proc.pid, signal.SIGKILL)
        ref.proc.wait()


def start_snakemake(workdir: Path, config: Path, targets: list[str], log: Path) -> subprocess.Popen:
    cmd = [str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(config), *RUN, *targets]
    # Own session: the test signals Snakemake's process group as SLURM would, without hitting pytest.
    with log.open("w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env(), start_new_session=True)


def live_step(state: Path) -> int:
    """Optimizer steps done so far, from the live history the trainer appends to (one line per step/seed)."""
    try:
        lines = (state / resume.HISTORY_FILE).read_text().splitlines()
    except FileNotFoundError:
        return 0
    steps = [json.loads(line)["step"] for line in lines if line.endswith("}")]
    return max(steps, default=0)


def group_alive(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def wait_for_group(pgid: int, timeout: float = 120) -> None:
    """Wait until no process of the group is left. On SIGTERM the `bash -c` wrapper of the job dies at
    once, so Snakemake may exit while the orphaned clipmerge is still saving its state."""
    deadline = time.monotonic() + timeout
    while group_alive(pgid):
        if time.monotonic() > deadline:
            os.killpg(pgid, signal.SIGKILL)
            pytest.fail(f"process group {pgid} still alive {timeout} s after Snakemake exited")
        time.sleep(0.1)


@pytest.mark.parametrize(
    "model, sig",
    [("finetune_seed0", signal.SIGTERM), ("model_stock_periodic", signal.SIGTERM), ("finetune_seed0", signal.SIGKILL)],
    ids=["finetune-SIGTERM", "periodic-SIGTERM", "finetune-SIGKILL"],
)
def test_killed_job_resumes_through_snakemake_to_identical_weights(base, reference, config, tmp_path, model, sig):
    run = copy_run(base, tmp_path / "run")
    state = run / "results" / "tiny" / "models" / model / "train_state"
    job_log = run / MODELS[model]
    step = random.randint(EVERY + 1, TOTAL - 6)  # after the first checkpoint, well before the end
    where = f"{model}, {sig.name} after step {step}"

    proc = start_snakemake(run, config, [target(model)], tmp_path / "interrupted.log")
    signalled = False
    while proc.poll() is None:
        if resume.latest_step(state) is not None and live_step(state) >= step:
            os.killpg(proc.pid, sig)
            signalled = True
            break
        time.sleep(0.01)
    proc.wait(timeout=300)
    wait_for_group(proc.pid)
    assert signalled, f"{where}: the job ended before the signal:\n{job_log.read_text()[-3000:]}"
    assert proc.returncode != 0 and not (run / target(model)).exists()

    saved = resume.latest_step(state)
    assert saved is not None, f"{where}: the training state is gone after the failed job"
    if sig == signal.SIGTERM:
        assert step <= saved <= TOTAL, where  # saved at the signal, not only at the periodic checkpoint
        assert "stopped by signal 15 with the training state saved" in job_log.read_text()
    else:
        assert saved % EVERY == 0 and EVERY <= saved < TOTAL, where  # the last periodic checkpoint
        snakemake(run, "--unlock", configfile=config)  # a killed Snakemake leaves its lock behind

    snakemake(run, *RUN, target(model), configfile=config)
    relative_state = state.relative_to(run)
    assert f"resumed from {relative_state} at step {saved} of {TOTAL}" in job_log.read_text(), where
    assert not state.exists()

    expected, got = load_weights(reference.weights(model)), load_weights(run / target(model))
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected), f"{where}: weights differ"
    history = run / target(model).replace("model.safetensors", "history.jsonl")
    ref_history = reference.workdir / target(model).replace("model.safetensors", "history.jsonl")
    losses = [(h["step"], h.get("seed"), h["loss"]) for h in map(json.loads, history.read_text().splitlines())]
    assert losses == [(h["step"], h.get("seed"), h["loss"])
                      for h in map(json.loads, ref_history.read_text().splitlines())], where
