"""`clipmerge finetune` on tiny data: outputs and their contract, SIGTERM + rerun bit-identity, NaN errors."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from clipmerge.cli import main
from clipmerge.layout import read_meta
from clipmerge.models.clip import TINY_ARCH
from clipmerge.training import resume
from clipmerge.weights.checkpoint import classifier_arch, load_weights
from fixtures.training import make_tiny_task


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> dict[str, Path]:
    return make_tiny_task(tmp_path_factory.mktemp("task"))


def finetune_args(task, out: Path, *flags) -> list[str]:
    return ["finetune", "--init", str(task["init"]), "--train-root", str(task["train"]),
            "--heldout", str(task["heldout"]), "--out", str(out), "--device", "cpu",
            "--batch-size", "8", "--warmup-steps", "2", "--lr", "1e-3", *flags]


def test_finetune_writes_model_meta_history_and_removes_its_state(task, tmp_path):
    out = tmp_path / "models" / "finetune_seed3" / "model.safetensors"
    history = tmp_path / "logs" / "history.jsonl"
    code = main(finetune_args(task, out, "--seed", "3", "--epochs", "2", "--workers", "0",
                              "--checkpoint-every", "4", "--history", str(history)))
    assert code == 0
    assert classifier_arch(out) == (TINY_ARCH, 4)
    meta = read_meta(out)
    assert {k: meta[k] for k in ("model", "method", "arch", "pretrained", "seed", "ingredients")} == {
        "model": "finetune_seed3", "method": "finetune", "arch": TINY_ARCH, "pretrained": "demo-pretrained",
        "seed": 3, "ingredients": [],
    }
    assert meta["hparams"]["total_steps"] == 10 and meta["hparams"]["device"] == "cpu"
    assert meta["hparams"]["lr"] == 1e-3 and meta["git_sha"]
    lines = [json.loads(line) for line in history.read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 11))
    assert not (out.parent / "train_state").exists()
    changed = load_weights(out)["head.weight"] != load_weights(task["init"])["head.weight"]
    assert changed.any()


def test_nan_loss_exits_2_naming_the_step(task, tmp_path, capsys):
    out = tmp_path / "finetune_seed0" / "model.safetensors"
    code = main(finetune_args(task, out, "--seed", "0", "--steps", "8", "--workers", "0", "--lr", "1e30",
                              "--warmup-steps", "0", "--grad-clip", "0", "--checkpoint-every", "1"))
    assert code == 2
    error = capsys.readouterr().err
    assert re.search(r"(loss|gradient norm) is (nan|inf) at step \d+", error) and "last good checkpoint" in error
    assert not out.exists()


def test_a_sweep_variant_is_written_under_its_own_id_with_its_seed(task, tmp_path, capsys):
    out = tmp_path / "finetune_hp2" / "model.safetensors"
    assert main(finetune_args(task, out, "--seed", "5", "--model-id", "finetune_hp2", "--steps", "2",
                              "--workers", "0")) == 0
    meta = read_meta(out, "finetune_hp2")
    assert meta["method"] == "finetune" and meta["seed"] == 5 and meta["hparams"]["steps"] == 2
    bad = tmp_path / "soup" / "model.safetensors"
    assert main(finetune_args(task, bad, "--seed", "0", "--model-id", "uniform_soup")) == 2
    assert "--model-id 'uniform_soup': expected finetune_seed<k> or finetune_hp<k>" in capsys.readouterr().err
    assert not bad.parent.exists()


def test_recipe_errors_exit_2(task, tmp_path, capsys):
    out = tmp_path / "finetune_seed0" / "model.safetensors"
    assert main(finetune_args(task, out, "--seed", "0", "--accum-steps", "3")) == 2
    assert "accum_steps" in capsys.readouterr().err


def _sigterm_after_lines(proc: subprocess.Popen, history: Path, lines: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if history.is_file() and len(history.read_text().splitlines()) >= lines:
            proc.send_signal(signal.SIGTERM)
            return
        time.sleep(0.01)


def _clipmerge(args: list[str], log: Path) -> subprocess.Popen:
    # One intra-op thread: on a shared 2-core machine, two threads per process spin against each other
    # (measured 10-25x slower per step). Both runs get the same setting, so their kernels are the same.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "clipmerge.cli", *args], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env=env)


@pytest.mark.slow  # two process start-ups (torch + open_clip imports) in sequence: 20-50 s on 2 shared cores
def test_sigterm_then_rerun_ends_bit_identical_to_an_uninterrupted_run(task, tmp_path):
    """A real subprocess is stopped with SIGTERM between checkpoints (after the first one), saves,
    exits 143, and a rerun (with another worker count) resumes to exactly the uninterrupted weights."""
    steps, every = 60, 5
    flags = ["--seed", "1", "--steps", str(steps), "--checkpoint-every", str(every), "--accum-steps", "2",
             "--mixup-alpha", "0.4", "--randaugment-ops", "2", "--label-smoothing", "0.1"]
    reference = tmp_path / "reference" / "model.safetensors"
    resumed = tmp_path / "resumed" / "model.safetensors"
    state = resumed.parent / "train_state"

    # The reference and the run to interrupt train at the same time (they are independent).
    reference_proc = _clipmerge(finetune_args(task, reference, *flags, "--workers", "0"), tmp_path / "ref.log")
    interrupted = _clipmerge(finetune_args(task, resumed, *flags, "--workers", "1"), tmp_path / "int.log")
    signaller = threading.Thread(target=_sigterm_after_lines, args=(interrupted, state / "history.jsonl", every + 2))
    signaller.start()
    signaller.join()
    assert interrupted.wait(timeout=120) == 128 + signal.SIGTERM, (tmp_path / "int.log").read_text()
    saved = resume.latest_step(state)
    assert every < saved < steps  # saved at the signal, not only at the periodic checkpoint
    assert not resumed.exists()

    rerun = _clipmerge(finetune_args(task, resumed, *flags, "--workers", "0"), tmp_path / "rerun.log")
    assert rerun.wait(timeout=300) == 0, (tmp_path / "rerun.log").read_text()
    assert reference_proc.wait(timeout=300) == 0, (tmp_path / "ref.log").read_text()
    assert f"resumed from {state} at step {saved}" in (tmp_path / "rerun.log").read_text()

    expected, got = load_weights(reference), load_weights(resumed)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    history = [json.loads(line) for line in resumed.with_name("history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == list(range(1, steps + 1))
    reference_history = reference.with_name("history.jsonl").read_text().splitlines()
    assert [h["loss"] for h in history] == [json.loads(line)["loss"] for line in reference_history]
    assert not state.exists()
