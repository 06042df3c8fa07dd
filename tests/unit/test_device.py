"""Device selection never breaks on a CPU-only machine."""

import pytest
import torch

from clipmerge.errors import ClipmergeError
from clipmerge.models.device import autocast, loader_kwargs, pick_device


def test_auto_picks_cuda_only_when_available():
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_explicit_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ClipmergeError, match="CUDA is not available"):
        pick_device("cuda")


def test_cpu_runs_fp32_without_pinned_memory():
    cpu = torch.device("cpu")
    with autocast(cpu):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert loader_kwargs(cpu, 0) == {"num_workers": 0, "pin_memory": False, "persistent_workers": False}
