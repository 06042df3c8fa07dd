"""torch.distributed for training: which rank this process is, its process group, and the few
collectives the trainer needs.

A process is one rank of a job when a launcher says so in its environment:

- torchrun: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``;
- srun with more than one task: ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``; the master is
  the first node of the step (``scontrol show hostnames``) and the port ``MASTER_PORT`` or one derived
  from the job id (so two jobs sharing a node do not collide).

Anything else (no variables, or a one-task SLURM step, which is how the Snakemake SLURM plugin runs
every job) is a single process with no process group, exactly as before distributed training existed.
The backend is nccl on CUDA and gloo on CPU. Every collective has the group's timeout: a rank that
dies or hangs makes the others fail within it instead of waiting forever.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from clipmerge.errors import ClipmergeError
from clipmerge.models.device import pick_device

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 600  # NCCL's own default: long enough for rank 0 to save a ViT-L/14 checkpoint
# torchrun waits this long after forwarding SIGTERM before it kills the ranks: under SLURM's
# --signal=TERM@300 the ranks have this much of the 5 minutes to finish a step and save.
SHUTDOWN_TIMEOUT_S = 240
SLURM_PORT_BASE, SLURM_PORT_SPAN = 20000, 20000


@dataclass(frozen=True)
class Launch:
    """What the launcher said: this process's rank, the number of ranks, its rank on its node."""

    rank: int
    size: int
    local_rank: int
    master_addr: str
    master_port: int


def _first_host(nodelist: str) -> str:
    if "[" not in nodelist and "," not in nodelist:
        return nodelist
    hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                           check=True).stdout.split()
    return hosts[0]


def launched(env=os.environ) -> Launch | None:
    """The launch this process is part of, or None for a single process."""
    try:
        if "RANK" in env and "WORLD_SIZE" in env:
            return Launch(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", env["RANK"])),
                          env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", "29500")))
        if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
            nodes = env.get("SLURM_STEP_NODELIST") or env["SLURM_JOB_NODELIST"]
            port = env.get("MASTER_PORT") or SLURM_PORT_BASE + int(env["SLURM_JOB_ID"]) % SLURM_PORT_SPAN
            return Launch(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env["SLURM_LOCALID"]),
                          env.get("MASTER_ADDR") or _first_host(nodes), int(port))
    except (KeyError, ValueError) as e:
        raise ClipmergeError(f"incomplete or malformed launcher environment: {e}") from None
    return None


class Ranks:
    """The process group of a training job, or a single process (``Ranks.single()``), behind one API:
    with one process every collective is the identity, so the trainer has one code path."""

    def __init__(self, rank: int = 0, size: int = 1, local_rank: int = 0, grouped: bool = False):
        self.rank, self.size, self.local_rank, self.grouped = rank, size, local_rank, grouped

    @classmethod
    def single(cls) -> Ranks:
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.grouped:
            dist.barrier()

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if ``flag`` is true on any rank."""
        if not self.grouped:
            return flag
        value = torch.tensor([int(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the ranks (in place), returned."""
        if self.grouped:
            dist.all_reduce(values)
        return values

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``tensor`` (same shape and dtype on all), in rank order."""
        if not self.grouped:
            return [tensor]
        parts = [torch.empty_like(tensor) for _ in range(self.size)]
        dist.all_gather(parts, tensor.contiguous())
        return parts


def training_device(requested: str, launch: Launch | None) -> torch.device:
    """The device of this rank: with CUDA, its own GPU (``cuda:<local rank>``); else as requested.

    Raises:
        ClipmergeError: CUDA was asked for but is missing, or the node has fewer GPUs than ranks.
    """
    device = pick_device(requested)
    if launch is None or device.type != "cuda":
        return device
    if launch.local_rank >= torch.cuda.device_count():
        raise ClipmergeError(f"rank {launch.rank} is local rank {launch.local_rank} on its node, which has "
                             f"{torch.cuda.device_count()} GPU(s): start at most one rank per GPU")
    return torch.device("cuda", launch.local_rank)


def join(launch: Launch | None, device: torch.device, timeout_s: int = DEFAULT_TIMEOUT_S) -> Ranks:
    """Join the launch's process group (nccl on CUDA, gloo on CPU); a single process joins nothing."""
    if launch is None:
        return Ranks.single()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://{launch.master_addr}:{launch.master_port}",
                            rank=launch.rank, world_size=launch.size, timeout=timedelta(seconds=timeout_s))
    log.info("rank %d of %d (%s, %s)", launch.rank, launch.size, backend, device)
    return Ranks(launch.rank, launch.size, launch.local_rank, grouped=True)


def leave(ranks: Ranks) -> None:
    if ranks.grouped and dist.is_initialized():
        dist.destroy_process_group()


def check_gpus_for(ranks: int, device: str) -> None:
    """Before starting ``ranks`` ranks on this node: one GPU each when they will use CUDA."""
    if pick_device(device).type == "cuda" and torch.cuda.device_count() < ranks:
        raise ClipmergeError(f"--ranks {ranks} needs {ranks} GPUs on this node, it has {torch.cuda.device_count()}")


def relaunch_with_torchrun(ranks: int, argv: list[str]) -> None:
    """Replace this process by torchrun starting ``ranks`` copies of ``clipmerge <argv>`` on this node.

    exec keeps the pid, so a signal meant for this command (SLURM's SIGTERM before a time limit)
    reaches torchrun, which forwards it to every rank and waits up to SHUTDOWN_TIMEOUT_S for their saves.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
               f"--shutdown-timeout={SHUTDOWN_TIMEOUT_S}", "-m", "clipmerge", *argv]
    log.info("starting %d ranks: %s", ranks, " ".join(command))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)
