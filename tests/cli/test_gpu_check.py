"""`make gpu-check` on a machine without CUDA: a smoke test that names every part it skips and runs DDP
at world size 1 on gloo (on a GPU machine the same script runs every part on CUDA)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real check (make gpu-check)")
def test_gpu_check_skips_the_cuda_parts_by_name_and_runs_ddp_on_gloo():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    skipped = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED (no CUDA): ")]
    assert len(skipped) == 4, proc.stdout
    assert "exit 0, joined a gloo group of 1: True, model written: True: ok" in proc.stdout
    assert "FAILED" not in proc.stdout
