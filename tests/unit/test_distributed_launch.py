"""Which launch a process is part of (torchrun, srun, none), its device, and the checks made before
training starts; no process group is needed (tests/cli/test_distributed.py has the real ones)."""

import argparse

import pytest
import torch

from clipmerge.commands.training_args import relaunch_if_asked
from clipmerge.errors import ClipmergeError
from clipmerge.training.distributed import Launch, Ranks, check_gpus_for, launched, training_device
from clipmerge.training.recipe import Recipe
from clipmerge.training.trainer import micro_share

TORCHRUN = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "node7", "MASTER_PORT": "29511"}
SRUN = {"SLURM_PROCID": "2", "SLURM_NTASKS": "4", "SLURM_LOCALID": "0", "SLURM_JOB_ID": "123456",
        "SLURM_STEP_NODELIST": "gpu12", "SLURM_JOB_NODELIST": "gpu[12-13]"}


def test_torchrun_variables_make_a_rank():
    assert launched(TORCHRUN) == Launch(rank=3, size=4, local_rank=1, master_addr="node7", master_port=29511)


def test_a_multi_task_srun_step_makes_a_rank_with_a_port_from_the_job_id():
    port = 20000 + 123456 % 20000
    assert launched(SRUN) == Launch(rank=2, size=4, local_rank=0, master_addr="gpu12", master_port=port)
    assert launched({**SRUN, "MASTER_PORT": "31000"}).master_port == 31000


def test_no_variables_or_a_one_task_slurm_step_is_a_single_process():
    assert launched({}) is None
    # how the Snakemake SLURM plugin runs every job: srun -n1 inside the allocation
    assert launched({**SRUN, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None


def test_a_malformed_launcher_environment_is_named():
    with pytest.raises(ClipmergeError, match="malformed launcher environment"):
        launched({**TORCHRUN, "RANK": "three"})


def test_cuda_ranks_need_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ClipmergeError, match="CUDA is not available"):
        training_device("cuda", launched(TORCHRUN))
    assert training_device("auto", launched(TORCHRUN)) == torch.device("cpu")


@pytest.mark.parametrize(("accum", "size", "rank", "share"), [(2, 2, 1, range(1, 2)), (8, 4, 2, range(4, 6)),
                                                             (3, 1, 0, range(3))])
def test_each_rank_takes_a_contiguous_block_of_micro_batches(accum, size, rank, share):
    assert micro_share(Recipe(batch_size=48, accum_steps=accum), Ranks(rank, size)) == share


def test_micro_batches_that_do_not_split_over_the_ranks_are_refused():
    with pytest.raises(ClipmergeError, match="accum_steps 2 micro-batches cannot be split over 4 ranks"):
        micro_share(Recipe(batch_size=512, accum_steps=2), Ranks(0, 4))


def test_ranks_must_agree_with_the_launcher(monkeypatch):
    for key, value in TORCHRUN.items():
        monkeypatch.setenv(key, value)
    args = argparse.Namespace(ranks=2, device="cpu", argv=[])
    with pytest.raises(ClipmergeError, match="--ranks 2, but the launcher started 4 ranks"):
        relaunch_if_asked(args)
    relaunch_if_asked(argparse.Namespace(ranks=4, device="cpu", argv=[]))  # agrees: nothing to do
    with pytest.raises(ClipmergeError, match="--ranks must be >= 1"):
        relaunch_if_asked(argparse.Namespace(ranks=0, device="cpu", argv=[]))


def test_ranks_on_cuda_without_cuda_stop_before_anything_starts(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for key in ("RANK", "WORLD_SIZE", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ClipmergeError, match="'cuda' was requested but CUDA is not available"):
        relaunch_if_asked(argparse.Namespace(ranks=2, device="cuda", argv=[]))


def test_more_ranks_than_gpus_stop_with_both_counts(monkeypatch):
    """The node's GPU count is torch's (faked here: this machine has none); the check names both."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ClipmergeError, match="--ranks 4 needs 4 GPUs on this node, it has 2"):
        check_gpus_for(4, "auto")
    check_gpus_for(2, "auto")
    check_gpus_for(4, "cpu")  # CPU ranks need no GPU
    with pytest.raises(ClipmergeError, match="rank 3 is local rank 3 on its node, which has 2 GPU"):
        training_device("auto", Launch(rank=3, size=4, local_rank=3, master_addr="h", master_port=1))
