"""End-to-end fine-tuning of the zero-shot classifier with one seed, resumable, in one process or
data-parallel over the ranks of a launch (wise-ft/model-soups recipe; docs/finetune.md has every
choice the papers leave open)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from clipmerge import layout
from clipmerge.errors import ClipmergeError
from clipmerge.models.classifier import load_classifier
from clipmerge.training import resume
from clipmerge.training.outputs import write_result
from clipmerge.training.setup import Setup
from clipmerge.training.trainer import SeedRun, Trainer

log = logging.getLogger(__name__)


def finetune_model_id(seed: int, model_id: str | None) -> str:
    """The id a fine-tune is written as: ``model_id`` (a seed's ``finetune_seed<k>`` or a sweep variant's
    ``finetune_hp<k>``), by default ``finetune_seed<seed>``.

    Raises:
        ClipmergeError: ``model_id`` is no fine-tune's id.
    """
    model_id = model_id or layout.finetune_id(seed)
    if layout.parse_model_id(model_id).kind not in (layout.FINETUNE, layout.SWEEP):
        raise ClipmergeError(f"--model-id {model_id!r}: expected finetune_seed<k> or finetune_hp<k>")
    return model_id


def finetune(setup: Setup, seed: int, *, model_id: str, checkpoint_every: int, workers: int,
             stop_requested: Callable[[], bool]) -> bool:
    """Train ``model_id`` (see :func:`finetune_model_id`) with ``seed`` to the end and write its
    outputs, or stop on request.

    Returns:
        True when finished (outputs written, training state cleared), False when stopped with the
        resumable state saved.
    """
    name = f"seed{seed}"
    ranks = setup.ranks
    seed_run = SeedRun(name, seed, load_classifier(setup.init), setup.data, setup.device, workers, data_parallel=ranks)
    fingerprint = {"recipe": setup.recipe.to_json(), "seed": seed, "train_size": len(setup.data.dataset)}
    trainer = Trainer([seed_run], setup.state_dir, checkpoint_every, fingerprint)
    if not trainer.fit(stop_requested=stop_requested):
        return False
    if ranks.is_main:
        write_result(seed_run.model, setup, trainer.history, model_id=model_id,
                     method=layout.FINETUNE, seed=seed,
                     hparams={**setup.data.hparams(), "device": str(setup.device), "ranks": ranks.size})
        resume.clear_state(setup.state_dir)
        log.info("fine-tuned %s in %.0f s on %d rank(s) -> %s", name, trainer.elapsed(), ranks.size, setup.out)
    ranks.barrier()
    return True
