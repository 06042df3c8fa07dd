"""What fine-tuning and periodic Model Stock start from: the recipe, the device, the data, the paths."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from clipmerge import layout
from clipmerge.errors import ClipmergeError
from clipmerge.models.clip import checkpoint_preprocess
from clipmerge.training import distributed
from clipmerge.training.distributed import Ranks
from clipmerge.training.recipe import Recipe
from clipmerge.training.trainer import TrainData, make_deterministic
from clipmerge.weights.checkpoint import classifier_arch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Setup:
    """The recipe, the device, the ranks, the data, the initial model and the output paths of a training run."""

    recipe: Recipe
    device: torch.device
    ranks: Ranks
    arch: str
    data: TrainData
    init: Path
    out: Path
    history: Path
    state_dir: Path

    def pretrained(self) -> str | None:
        """The pre-trained CLIP the initial model descends from (its meta.json)."""
        return layout.read_meta(self.init).get("pretrained")


def prepare(*, init, train_root, heldout, recipe: Recipe, device: str, out, history=None, state_dir=None,
            checkpoint_every: int, workers: int, dist_timeout: int = distributed.DEFAULT_TIMEOUT_S) -> Setup:
    """Validate, choose the device, join the launch's process group if there is one, make kernels
    deterministic and load the training set.

    Args:
        init: the initial classifier (the zero-shot model).
        history: per-step history.jsonl (default: beside ``out``).
        state_dir: resumable training state (default: ``<out dir>/train_state``).
        checkpoint_every, workers: checked here (>= 0); they never change the result.
        dist_timeout: seconds any collective waits for the other ranks.
    """
    if checkpoint_every < 0 or workers < 0:
        raise ClipmergeError("--checkpoint-every and --workers must be >= 0")
    launch = distributed.launched()
    chosen = distributed.training_device(device, launch)
    make_deterministic(chosen)
    arch, _ = classifier_arch(init)
    data = TrainData.load(train_root, heldout, checkpoint_preprocess(init), recipe)
    out = Path(out)
    ranks = distributed.join(launch, chosen, dist_timeout)
    log.info("%d training images, %d steps per epoch, %d steps on %s",
             len(data.dataset), data.steps_per_epoch, data.total_steps, chosen)
    return Setup(
        recipe, chosen, ranks, arch, data, Path(init), out,
        Path(history) if history else out.with_name(layout.HISTORY_NAME),
        Path(state_dir) if state_dir else out.parent / "train_state",
    )
