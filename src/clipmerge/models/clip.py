"""open_clip CLIPs: architectures (the shipped tiny config included), weights, preprocessing.

A full CLIP (both towers) is what the pretrained stage stores: ``pretrained/model.safetensors`` with
its meta.json; the classifier (classifier.py) keeps only the image tower.
"""

from __future__ import annotations

import logging
from pathlib import Path

import open_clip
from torch import nn

from clipmerge import layout
from clipmerge.errors import ClipmergeError
from clipmerge.weights.checkpoint import load_strict, load_weights, save_weights

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
TINY_ARCH = "clipmerge-tiny"

open_clip.add_model_config(MODEL_CONFIG_DIR)


def quiet_create(arch: str, pretrained: str | None = None) -> open_clip.CLIP:
    """``open_clip.create_model`` without its "initialized randomly" warning (intended here)."""
    if arch not in open_clip.list_models():
        raise ClipmergeError(f"unknown open_clip architecture {arch!r} (see open_clip.list_models())")
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return open_clip.create_model(arch, pretrained=pretrained)
    finally:
        logger.setLevel(level)


def create_clip(arch: str, weights: str | None = None) -> open_clip.CLIP:
    """A full CLIP (both towers). ``weights``: None (random init), a clipmerge/open_clip safetensors
    file, or an open_clip pretrained tag (downloads; only the local ``fetch_pretrained`` rule uses it)."""
    if weights is None:
        return quiet_create(arch)
    if Path(weights).exists():
        model = quiet_create(arch)
        state = load_weights(weights) if str(weights).endswith(".safetensors") else None
        if state is None:  # open_clip's own .pt/.bin checkpoints, loaded with weights_only=True
            try:
                open_clip.load_checkpoint(model, weights, weights_only=True)
            except Exception as e:  # refused pickled code, garbage, or another architecture's tensors
                lines = [line for line in str(e).splitlines() if line.strip()] or [repr(e)]
                reason = next((line for line in lines if "GLOBAL" in line), lines[0])
                raise ClipmergeError(
                    f"{weights}: not loadable as a {arch} checkpoint with torch.load(weights_only=True), "
                    f"which never runs pickled code ({type(e).__name__}: {reason[:300]})"
                ) from e
        else:
            load_strict(model, state, weights)
        return model
    if "/" in weights or weights.endswith((".safetensors", ".pt", ".bin")):
        raise ClipmergeError(f"pretrained weights {weights!r}: file not found")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if weights not in tags:
        raise ClipmergeError(f"{weights!r} is neither a file nor a pretrained tag of {arch} ({', '.join(tags)})")
    return quiet_create(arch, pretrained=weights)


def save_clip(model: open_clip.CLIP, out, arch: str, pretrained: str, hparams: dict | None = None) -> None:
    """Write a full CLIP state dict and its meta.json (model id ``pretrained``)."""
    save_weights(model.state_dict(), out, metadata={"format": "open_clip", "arch": arch})
    layout.write_meta(out, layout.model_meta_record(layout.PRETRAINED, layout.PRETRAINED, arch, pretrained,
                                                    hparams=hparams))


def embed_dim_of(arch: str) -> int:
    return open_clip.get_model_config(arch)["embed_dim"]


def preprocess_cfg(arch: str, model: nn.Module | None = None) -> dict:
    """open_clip's preprocessing config (size, mean, std, interpolation) for an architecture, read from
    ``model`` when one is already built (building a ViT-B/32 just for this costs seconds)."""
    return open_clip.get_model_preprocess_cfg(model if model is not None else quiet_create(arch))


def eval_transform(arch: str, model: nn.Module | None = None):
    """open_clip's evaluation transform: resize (bicubic) + centre crop + CLIP mean/std."""
    cfg = preprocess_cfg(arch, model)
    return open_clip.image_transform(
        cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
        resize_mode=cfg["resize_mode"], interpolation=cfg["interpolation"],
    )
