"""What a finished training leaves: model.safetensors, its meta.json and history.jsonl."""

from __future__ import annotations

from pathlib import Path

from clipmerge import layout
from clipmerge.files import atomic_write
from clipmerge.models.classifier import ImageClassifier, save_classifier
from clipmerge.training.setup import Setup


def write_result(model: ImageClassifier, setup: Setup, history: list[str], *, model_id: str, method: str,
                 seed: int | None, hparams: dict) -> None:
    """Save the classifier, its meta.json and the history, each atomically."""
    save_classifier(model, setup.out, setup.arch)
    layout.write_meta(setup.out, layout.model_meta_record(model_id, method, setup.arch, setup.pretrained(),
                                                          seed=seed, hparams=hparams))
    atomic_write(setup.history, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in history)))
