"""CLIP models: open_clip architectures, the shipped tiny config, and the image classifier we fine-tune.

A *classifier checkpoint* holds only the image tower and a linear head (the text tower is dropped,
as model-soups' ModelWrapper does): keys ``visual.*``, ``head.weight``, ``head.bias``. Its safetensors
header records ``arch`` and ``num_classes`` so a checkpoint rebuilds itself without a config.
"""

from __future__ import annotations

import logging
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from clipmerge.checkpoint import header_metadata, load_weights, save_weights
from clipmerge.errors import ClipmergeError

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
TINY_ARCH = "clipmerge-tiny"
FORMAT = "clipmerge-classifier-v1"

open_clip.add_model_config(MODEL_CONFIG_DIR)


def _quiet_create(arch: str, pretrained: str | None = None) -> open_clip.CLIP:
    if arch not in open_clip.list_models():
        raise ClipmergeError(f"unknown open_clip architecture {arch!r} (see open_clip.list_models())")
    # open_clip warns "initialized randomly" when pretrained is None; that is intended here.
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
        return _quiet_create(arch)
    if Path(weights).exists():
        model = _quiet_create(arch)
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
            _load_strict(model, state, weights)
        return model
    if "/" in weights or weights.endswith((".safetensors", ".pt", ".bin")):
        raise ClipmergeError(f"pretrained weights {weights!r}: file not found")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if weights not in tags:
        raise ClipmergeError(f"{weights!r} is neither a file nor a pretrained tag of {arch} ({', '.join(tags)})")
    return _quiet_create(arch, pretrained=weights)


class ImageClassifier(nn.Module):
    """Image tower + linear head on L2-normalised features: logits = head(f / |f|).

    With the zero-shot head (normalised class embeddings x logit_scale.exp(), zero bias) this is
    exactly CLIP zero-shot classification (model-soups/wise-ft ClassificationHead(normalize=True)).
    """

    def __init__(self, visual: nn.Module, embed_dim: int, num_classes: int):
        super().__init__()
        self.visual = visual
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(images), dim=-1)


def embed_dim_of(arch: str) -> int:
    return open_clip.get_model_config(arch)["embed_dim"]


def new_classifier(arch: str, num_classes: int) -> ImageClassifier:
    visual = _quiet_create(arch).visual
    return ImageClassifier(visual, embed_dim_of(arch), num_classes)


def classifier_from_clip(clip: open_clip.CLIP, head_weight: torch.Tensor, head_bias=None) -> ImageClassifier:
    """Wrap a CLIP's image tower with a head of shape [num_classes, embed_dim]."""
    num_classes, embed_dim = head_weight.shape
    model = ImageClassifier(clip.visual, embed_dim, num_classes)
    with torch.no_grad():
        model.head.weight.copy_(head_weight)
        model.head.bias.copy_(torch.zeros(num_classes) if head_bias is None else head_bias)
    return model


def save_classifier(model: ImageClassifier, path, arch: str) -> None:
    header = {"format": FORMAT, "arch": arch, "num_classes": str(model.head.out_features)}
    save_weights(model.state_dict(), path, metadata=header)


def classifier_arch(path) -> tuple[str, int]:
    """(arch, num_classes) from a classifier checkpoint's header; other files raise a clear error."""
    meta = header_metadata(path)
    if meta.get("format") != FORMAT:
        raise ClipmergeError(f"{path}: not a clipmerge classifier checkpoint (header format={meta.get('format')!r})")
    return meta["arch"], int(meta["num_classes"])


def load_classifier(path, state: dict[str, torch.Tensor] | None = None) -> ImageClassifier:
    """Rebuild a classifier from its checkpoint (or from ``state`` with that checkpoint's architecture)."""
    arch, num_classes = classifier_arch(path)
    model = new_classifier(arch, num_classes)
    _load_strict(model, load_weights(path) if state is None else state, path)
    return model


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ClipmergeError(
            f"{path}: does not match the architecture (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ClipmergeError(
                f"{path}: tensor {key!r} has shape {tuple(value.shape)}, the architecture expects "
                f"{tuple(expected[key].shape)} (checkpoint of another architecture?)"
            )
    model.load_state_dict(state, strict=True)


def preprocess_cfg(arch: str, model: nn.Module | None = None) -> dict:
    """open_clip's preprocessing config (size, mean, std, interpolation) for an architecture, read from
    ``model`` when one is already built (building a ViT-B/32 just for this costs seconds)."""
    return open_clip.get_model_preprocess_cfg(model if model is not None else _quiet_create(arch))


def eval_transform(arch: str, model: nn.Module | None = None):
    """open_clip's evaluation transform: resize (bicubic) + centre crop + CLIP mean/std."""
    cfg = preprocess_cfg(arch, model)
    return open_clip.image_transform(
        cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
        resize_mode=cfg["resize_mode"], interpolation=cfg["interpolation"],
    )
