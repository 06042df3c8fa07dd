"""torch.distributed training on CPU with gloo, in real process groups: `clipmerge finetune` data-parallel
against one process, `clipmerge periodic` with one rank per seed against its lockstep run, stops, resumes
across world sizes and dead ranks.

Every run is a subprocess with one thread (OMP_NUM_THREADS=1), so a rank and the single process it is
compared with run the same kernels. Ranks are started by torchrun (`--ranks 2`, as the workflow does) or,
where a test must signal or stop one rank, by hand with torchrun's variables (RANK, WORLD_SIZE, ...).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from clipmerge.files import read_json
from clipmerge.training import resume
from clipmerge.weights.checkpoint import load_weights
from fixtures.training import make_tiny_task

# batch 8 in 2 micro-batches of 4: one per rank with 2 ranks; mixup on, so a micro-batch's pairs matter.
RECIPE = ["--batch-size", "8", "--accum-steps", "2", "--warmup-steps", "2", "--lr", "1e-3", "--mixup-alpha", "0.4"]
# The largest |difference| between any weight of the 2-rank and the 1-process fine-tune after 6 steps, by
# micro-batches per step. 2: measured 0.0 (each rank computes one micro-batch and the two gradients are
# summed in the same order; batch sizes are powers of two, so DDP's scaling is exact), asserted exact.
# 4: measured 6.5e-5: each rank sums its two micro-batches first, one process sums all four in turn, and
# Adam turns that rounding into up to lr-sized steps where a gradient entry is near 0. The same single
# process on 2 threads instead of 1 differs from itself by 4.2e-5, the same order: rounding.
DDP_TOLERANCE = {"2": 0.0, "4": 2e-4}
TIMEOUT = 300


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> dict:
    return make_tiny_task(tmp_path_factory.mktemp("task"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_thread_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_NTASKS")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def command(task, out: Path, kind: str, *args: str) -> list[str]:
    seeds = ["--seeds", "0", "1"] if kind == "periodic" else ["--seed", "0"]
    return [sys.executable, "-m", "clipmerge", kind, "--init", str(task["init"]), "--train-root", str(task["train"]),
            "--heldout", str(task["heldout"]), "--out", str(out / "model.safetensors"), "--workers", "0",
            "--device", "cpu", *seeds, *RECIPE, *args]


def run(cmd: list[str], env=None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env or one_thread_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def start_ranks(cmd: list[str], size: int, timeout_s: int = 60) -> list[subprocess.Popen]:
    """``size`` ranks started as torchrun starts them (its environment variables), one Popen each."""
    port = str(free_port())
    return [subprocess.Popen(cmd + ["--dist-timeout", str(timeout_s)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=one_thread_env(RANK=str(r), WORLD_SIZE=str(size), LOCAL_RANK=str(r),
                                                           MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
            for r in range(size)]


def wait_for_steps(state_dir: Path, steps: int, procs: list[subprocess.Popen]) -> None:
    history = state_dir / resume.HISTORY_FILE
    end = time.monotonic() + TIMEOUT
    while not (history.is_file() and len(history.read_text().splitlines()) >= steps):
        assert all(p.poll() is None for p in procs), [p.communicate()[0][-3000:] for p in procs]
        assert time.monotonic() < end, "no training progress"
        time.sleep(0.1)


def sigterm_one_rank(cmd: list[str], state_dir: Path, lines: int, rank: int) -> None:
    """Two ranks of ``cmd``; once the history has ``lines`` lines, SIGTERM to ``rank`` only. Both must exit
    128 + 15 (the other stopped by the agreement after the step)."""
    procs = start_ranks(cmd, 2)
    try:
        wait_for_steps(state_dir, lines, procs)
        procs[rank].send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert codes == [128 + signal.SIGTERM] * 2, [p.stdout.read()[-3000:] for p in procs]


def max_difference(a: Path, b: Path) -> float:
    x, y = load_weights(a), load_weights(b)
    assert x.keys() == y.keys()
    return max(float((x[k] - y[k]).abs().max()) for k in x)


def assert_identical(a: Path, b: Path) -> None:
    x, y = load_weights(a), load_weights(b)
    assert x.keys() == y.keys()
    assert [k for k in x if not torch.equal(x[k], y[k])] == []


def losses(model_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (model_dir / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finetunes(task, tmp_path_factory) -> Path:
    """The same fine-tunes (6 steps, 2 and 4 micro-batches a step) by one process and by 2 torchrun ranks."""
    root = tmp_path_factory.mktemp("finetunes")
    for accum in ("2", "4"):
        run(command(task, root / f"single_{accum}", "finetune", "--steps", "6", "--accum-steps", accum))
        run(command(task, root / f"ranks_{accum}", "finetune", "--steps", "6", "--accum-steps", accum, "--ranks", "2"))
    return root


@pytest.mark.parametrize("accum", ["2", "4"])  # 4: each rank accumulates 2 micro-batches (DDP no_sync)
def test_two_ranks_take_the_same_optimizer_steps_as_one_process(finetunes, accum):
    single, ranks = finetunes / f"single_{accum}", finetunes / f"ranks_{accum}"
    difference = max_difference(single / "model.safetensors", ranks / "model.safetensors")
    print(f"\nlargest |weight difference|, 2 ranks vs 1 process, {accum} micro-batches, 6 steps: {difference:.3g}")
    assert difference <= DDP_TOLERANCE[accum]
    assert losses(ranks) == pytest.approx(losses(single), abs=1e-4)
    meta = read_json(ranks / "meta.json")
    assert meta["hparams"]["ranks"] == 2 and meta["hparams"]["accum_steps"] == int(accum)
    assert not (ranks / "train_state").exists()  # rank 0 cleared the state when done


def test_a_signal_to_one_rank_saves_the_state_and_a_resume_on_another_world_size_ends_the_same(task, tmp_path):
    """SIGTERM to rank 1 only: both ranks stop after the same step with a saved state and exit 128 + 15;
    one process then resumes it to the end and matches the uninterrupted 2-rank run."""
    # 40 steps: long enough to be signalled mid-training
    sigterm_one_rank(command(task, tmp_path, "finetune", "--steps", "40", "--checkpoint-every", "0"),
                     tmp_path / "train_state", lines=2, rank=1)
    stopped = resume.latest_step(tmp_path / "train_state")
    assert stopped is not None and stopped < 40
    assert not (tmp_path / "model.safetensors").exists()

    resumed = run(command(task, tmp_path, "finetune", "--steps", "40"))
    assert f"resumed from {tmp_path / 'train_state'} at step {stopped}" in resumed.stderr
    reference = tmp_path / "reference"
    run(command(task, reference, "finetune", "--steps", "40", "--ranks", "2"))
    assert max_difference(tmp_path / "model.safetensors", reference / "model.safetensors") <= DDP_TOLERANCE["2"]
    assert losses(tmp_path) == pytest.approx(losses(reference), abs=1e-6)


def test_a_hung_rank_makes_the_other_fail_within_the_collective_timeout(task, tmp_path):
    procs = start_ranks(command(task, tmp_path, "finetune", "--steps", "200"), 2, timeout_s=10)
    try:
        wait_for_steps(tmp_path / "train_state", 1, procs)
        procs[1].send_signal(signal.SIGSTOP)  # alive but silent: only the timeout can end the wait
        began = time.monotonic()
        code = procs[0].wait(timeout=120)
        waited = time.monotonic() - began
    finally:
        for p in procs:
            p.kill()
    output = procs[0].stdout.read()
    assert code != 0 and waited < 60, output[-3000:]
    print(f"\nrank 0 failed {waited:.1f} s after rank 1 stopped (collective timeout 10 s)")


def test_the_micro_batches_must_split_over_the_ranks(task, tmp_path):
    procs = start_ranks(command(task, tmp_path, "finetune", "--steps", "2", "--accum-steps", "1"), 2)
    outputs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    assert [p.returncode for p in procs] == [2, 2]
    assert "accum_steps 1 micro-batches cannot be split over 2 ranks" in outputs[0]
    assert not (tmp_path / "train_state").exists()


def test_periodic_with_one_rank_per_seed_is_bit_identical_to_lockstep(task, tmp_path):
    args = ("--steps", "7", "--merge-every", "3")
    run(command(task, tmp_path / "lockstep", "periodic", *args))
    run(command(task, tmp_path / "ranks", "periodic", *args, "--ranks", "2"))
    assert_identical(tmp_path / "lockstep" / "model.safetensors", tmp_path / "ranks" / "model.safetensors")
    lockstep, ranks = (read_json(tmp_path / d / "merge_history.json") for d in ("lockstep", "ranks"))
    assert [m["step"] for m in ranks] == [3, 6, 7] and ranks == lockstep
    rows = [[json.loads(line)[k] for k in ("step", "seed", "loss")]
            for d in ("lockstep", "ranks") for line in (tmp_path / d / "history.jsonl").read_text().splitlines()]
    assert rows[:14] == rows[14:]


def test_periodic_ranks_stopped_by_a_signal_resume_in_one_process_bit_identically(task, tmp_path):
    """The state of a seed-parallel run (each rank wrote its seed's files) resumes in lockstep."""
    args = ("--steps", "40", "--merge-every", "3", "--checkpoint-every", "0")
    sigterm_one_rank(command(task, tmp_path / "stopped", "periodic", *args), tmp_path / "stopped" / "train_state",
                     lines=2 * 2, rank=0)
    run(command(task, tmp_path / "stopped", "periodic", *args))
    run(command(task, tmp_path / "reference", "periodic", *args))
    assert_identical(tmp_path / "stopped" / "model.safetensors", tmp_path / "reference" / "model.safetensors")
