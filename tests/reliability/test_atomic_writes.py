"""A process SIGKILLed in the middle of writing a checkpoint never leaves a file at the final path that
looks complete: the previous file stays byte-identical and loadable (clipmerge.files.atomic_write,
which every checkpoint, meta.json and streamed merge goes through)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from clipmerge.cli import main
from clipmerge.files import write_json
from clipmerge.models.classifier import load_classifier, new_classifier, save_classifier
from clipmerge.models.clip import TINY_ARCH
from clipmerge.weights.checkpoint import load_weights

HEADER = {"format": "clipmerge-classifier-v1", "arch": TINY_ARCH, "num_classes": "3"}


def temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def size_of(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def test_sigkill_inside_atomic_write_keeps_the_previous_checkpoint(tmp_path):
    """Deterministic: the writer stops after half of a real checkpoint's bytes and is killed there."""
    out = tmp_path / "models" / "finetune_seed0" / "model.safetensors"
    torch.manual_seed(0)
    save_classifier(new_classifier(TINY_ARCH, 3), out, TINY_ARCH)
    previous = out.read_bytes()
    newer = tmp_path / "newer.safetensors"
    save_classifier(new_classifier(TINY_ARCH, 3), newer, TINY_ARCH)

    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from clipmerge.files import atomic_write\n"
        "data = Path(sys.argv[2]).read_bytes()\n"
        "def write(tmp):\n"
        "    with open(tmp, 'wb') as fh:\n"
        "        fh.write(data[: len(data) // 2])\n"
        "        fh.flush()\n"
        "        print(tmp, flush=True)\n"
        "        time.sleep(600)\n"
        "atomic_write(sys.argv[1], write)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(out), str(newer)], stdout=subprocess.PIPE, text=True)
    try:
        writing = Path(child.stdout.readline().strip())  # the file the writer has half written
        assert 0 < writing.stat().st_size < newer.stat().st_size
    finally:
        child.kill()  # SIGKILL: no handler, no cleanup
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert out.read_bytes() == previous
    load_classifier(out)
    # What is left is a hidden temp file, never the final name.
    assert sorted(p.name for p in out.parent.iterdir() if not p.name.startswith(".")) == ["model.safetensors"]


@pytest.fixture
def big_inputs(tmp_path):
    """Two 'fine-tunes' of 16 x 2M float32 tensors (128 MB each): a streamed merge takes long enough to
    be killed part-way through its output."""
    paths = []
    for seed in (0, 1):
        g = torch.Generator().manual_seed(seed)
        state = {f"visual.block{i:02d}.weight": torch.randn(2_000_000, generator=g) for i in range(16)}
        path = tmp_path / "models" / f"finetune_seed{seed}" / "model.safetensors"
        path.parent.mkdir(parents=True)
        save_file(state, path, metadata=HEADER)
        write_json(path.with_name("meta.json"), {"model": path.parent.name, "pretrained": "demo"})
        paths.append(path)
    return paths


def test_sigkill_during_a_streamed_merge_keeps_the_previous_result(big_inputs, tmp_path):
    """A real `clipmerge merge` process is killed once its output's temp file is partly written."""
    out = tmp_path / "models" / "uniform_soup" / "model.safetensors"
    argv = ["merge", "--method", "uniform_soup", "--inputs", *map(str, big_inputs), "--out", str(out)]
    assert main(argv) == 0  # the earlier, complete result
    before = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    assert sorted(before) == ["merge.json", "meta.json", "model.safetensors"]
    full_size = out.stat().st_size

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-m", "clipmerge.cli", *argv], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = None
    try:
        deadline = time.monotonic() + 300
        while partial is None and child.poll() is None and time.monotonic() < deadline:
            # A part-written temp file, or the output itself changing (it would be, if written in place).
            sizes = [size_of(p) for p in temp_files(out.parent)]
            if size_of(out) != full_size or any(0 < s < full_size for s in sizes if s is not None):
                partial = sizes
            else:
                time.sleep(0.002)
    finally:
        child.kill()
        child.wait()
    assert partial is not None, "the merge finished before it could be killed mid-write"
    assert child.returncode == -signal.SIGKILL

    after = {p.name: p.read_bytes() for p in out.parent.iterdir() if not p.name.startswith(".")}
    assert after == before
    merged = load_weights(out)
    inputs = [load_weights(p) for p in big_inputs]
    key = "visual.block07.weight"
    torch.testing.assert_close(merged[key], (inputs[0][key] + inputs[1][key]) / 2)
