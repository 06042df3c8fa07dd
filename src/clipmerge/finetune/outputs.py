"""What a finished training leaves: model.safetensors, meta.json (DESIGN contract) and history.jsonl."""

from __future__ import annotations

from pathlib import Path

from clipmerge.checkpoint import atomic_write, git_sha, meta_path, read_meta, write_json
from clipmerge.models import ImageClassifier, save_classifier


def pretrained_of(init) -> str | None:
    """The ``pretrained`` entry of the initial model's meta.json, if it has one."""
    return read_meta(init).get("pretrained") if meta_path(init).is_file() else None


def write_result(
    model: ImageClassifier,
    arch: str,
    out,
    history_path,
    history: list[str],
    *,
    method: str,
    init,
    seed: int | None,
    ingredients: list[str],
    hparams: dict,
) -> None:
    """Save the classifier, its meta.json and the history, each atomically. The model id is the name
    of ``out``'s folder (``models/<model>/model.safetensors``)."""
    save_classifier(model, out, arch)
    meta = {
        "model": Path(out).parent.name,
        "method": method,
        "arch": arch,
        "pretrained": pretrained_of(init),
        "seed": seed,
        "ingredients": ingredients,
        "hparams": hparams,
        "git_sha": git_sha(),
    }
    write_json(meta_path(out), meta)
    atomic_write(history_path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in history)))
