"""Resumable training state: atomic checkpoints of weights, optimizer moments and progress; stop signals.

A checkpoint is a directory ``<state_dir>/step_<N>/`` holding safetensors files (model weights,
optimizer tensors), the history up to step N and ``state.json`` (step, optimizer hyper-parameters,
progress). ``state.json`` is written last, so its presence marks the checkpoint complete; a checkpoint
is deleted only after a newer one is complete. There is no RNG state to save: every random draw is a
function of (seed, step) (see streams.py). Nothing is pickled.

SLURM sends SIGTERM (or the ``--signal`` of the job, commonly SIGUSR1) before a time limit or a
preemption. :class:`StopSignals` turns either into a request that the training loop honours after
the current optimizer step: it saves a checkpoint and exits with 128 + the signal number, so Snakemake
(``--retries``) or a requeued SLURM job reruns the command, which resumes.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from clipmerge.files import atomic_write, read_json, write_json
from clipmerge.weights.checkpoint import load_weights, save_weights

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
HISTORY_FILE = "history.jsonl"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


@dataclass
class Checkpoint:
    """A complete checkpoint read back: its step, state.json, weight files by name and history lines."""

    step: int
    info: dict
    weights: dict[str, dict[str, torch.Tensor]]
    history: list[str]


def _complete_checkpoints(state_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for path in state_dir.glob("step_*"):
        if (path / STATE_FILE).is_file() and path.name[5:].isdigit():
            found.append((int(path.name[5:]), path))
    return sorted(found)


def checkpoint_path(state_dir: str | Path, step: int) -> Path:
    return Path(state_dir) / f"step_{step:09d}"


def start_checkpoint(path: Path) -> None:
    """An empty folder for a checkpoint (a leftover of a save killed before state.json is removed)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def write_checkpoint_weights(path: Path, weights: dict[str, dict[str, torch.Tensor]]) -> None:
    """``weights[name]`` -> ``<path>/<name>.safetensors`` (ranks write their own files side by side)."""
    for name, tensors in weights.items():
        save_weights(tensors, path / f"{name}.safetensors")


def complete_checkpoint(state_dir: str | Path, path: Path, step: int, info: dict, history: list[str]) -> None:
    """Write the history and, last, state.json (the mark of a complete checkpoint); drop older ones."""
    atomic_write(path / HISTORY_FILE, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in history)))
    write_json(path / STATE_FILE, {"step": step, **info})
    state_dir = Path(state_dir)
    for _, old in _complete_checkpoints(state_dir):
        if old != path:
            shutil.rmtree(old)
    for leftover in state_dir.glob("step_*"):
        if leftover != path and not (leftover / STATE_FILE).is_file():
            shutil.rmtree(leftover)


def latest_step(state_dir: str | Path) -> int | None:
    """Step of the newest complete checkpoint in ``state_dir``, or None."""
    complete = _complete_checkpoints(Path(state_dir))
    return complete[-1][0] if complete else None


def load_latest_checkpoint(state_dir: str | Path, names: list[str] | None = None) -> Checkpoint | None:
    """The newest complete checkpoint in ``state_dir`` (of its weight files, only ``names`` if given:
    a rank reads its own run's), or None if there is none."""
    complete = _complete_checkpoints(Path(state_dir))
    if not complete:
        return None
    step, path = complete[-1]
    info = read_json(path / STATE_FILE)
    files = sorted(path.glob("*.safetensors"))
    weights = {f.stem: load_weights(f) for f in files if names is None or f.stem in names}
    history = (path / HISTORY_FILE).read_text().splitlines()
    return Checkpoint(step, info, weights, history)


def clear_state(state_dir: str | Path) -> None:
    """Delete the checkpoints and the live history (only our files), and the folder if it is then empty."""
    state_dir = Path(state_dir)
    for path in state_dir.glob("step_*"):
        shutil.rmtree(path)
    (state_dir / HISTORY_FILE).unlink(missing_ok=True)
    if state_dir.is_dir() and not any(state_dir.iterdir()):
        state_dir.rmdir()


def optimizer_state(optimizer: torch.optim.Optimizer, names: list[str]) -> tuple[dict[str, torch.Tensor], list]:
    """The optimizer's tensors keyed ``<state>/<parameter name>`` (exp_avg/visual.conv1.weight, ...) and
    its param groups as JSON. ``names`` lists parameter names in the optimizer's parameter order."""
    state = optimizer.state_dict()
    tensors = {
        f"{key}/{names[index]}": value
        for index, per_param in state["state"].items()
        for key, value in per_param.items()
    }
    return tensors, state["param_groups"]


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, names: list[str], tensors: dict[str, torch.Tensor], groups: list
) -> None:
    """Inverse of :func:`optimizer_state`."""
    index = {name: i for i, name in enumerate(names)}
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        state_key, name = key.split("/", 1)
        per_param.setdefault(index[name], {})[state_key] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})


class StopSignals:
    """Context manager: SIGTERM/SIGUSR1 set :attr:`received` instead of killing the process.

    Handlers can only be installed from the main thread; elsewhere (a library caller's thread)
    signals keep their default behaviour.
    """

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            log.warning("received %s: will save the training state after this step and exit",
                        signal.Signals(signum).name)
            self.received = signum

    def requested(self) -> bool:
        return self.received is not None


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: SLURM signals every process of the job; workers leave the clean
    stop to the main process (which shuts them down) instead of dying mid-batch."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def stop_exit_code(signals: StopSignals) -> int:
    """Exit code after a signal-triggered save: 128 + signal number, as if the signal had killed us
    (SIGTERM's for a rank that stopped because another rank was signalled)."""
    received = signals.received or signal.SIGTERM
    log.warning("stopped by signal %d%s with the training state saved; rerun the same command to resume",
                received, "" if signals.received else " to another rank")
    return 128 + received
