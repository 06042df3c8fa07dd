"""The image classifier that is fine-tuned, merged and evaluated: CLIP's image tower + a linear head.

A *classifier checkpoint* holds only the image tower and the head (the text tower is dropped, as
model-soups' ModelWrapper does): keys ``visual.*``, ``head.weight``, ``head.bias``. Its safetensors
header records ``format``, ``arch``, ``num_classes`` and ``preprocess`` (clipmerge.models.clip) so a
checkpoint rebuilds itself, activation and transform included, without a config.
"""

from __future__ import annotations

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from clipmerge.models.clip import embed_dim_of, preprocess_header, quiet_create, recorded_preprocess
from clipmerge.weights.checkpoint import (
    CLASSIFIER_FORMAT,
    classifier_arch,
    load_strict,
    load_weights,
    save_weights,
)


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
        return self.classify(self.visual(images))

    def classify(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The head on the image tower's output, in fp32 whatever precision the tower ran in: bf16
        logits tie for the top class often enough to move top-1 (283 of the demo's 29,400 model-image
        pairs, benchmarks/bench_precision.py)."""
        return self.head(F.normalize(embeddings.float(), dim=-1))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(images), dim=-1)


def new_classifier(arch: str, num_classes: int, preprocess: dict | None = None) -> ImageClassifier:
    """A randomly initialised classifier; ``preprocess`` (a recorded config) replaces the arch's default."""
    visual = quiet_create(arch).visual
    if preprocess is not None:
        open_clip.set_model_preprocess_cfg(visual, preprocess)
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
    header = {"format": CLASSIFIER_FORMAT, "arch": arch, "num_classes": str(model.head.out_features),
              **preprocess_header(model)}
    save_weights(model.state_dict(), path, metadata=header)


def load_classifier(path, state: dict[str, torch.Tensor] | None = None) -> ImageClassifier:
    """Rebuild a classifier from its checkpoint (or from ``state`` with that checkpoint's architecture)."""
    arch, num_classes = classifier_arch(path)
    model = new_classifier(arch, num_classes, recorded_preprocess(path))
    load_strict(model, load_weights(path) if state is None else state, path)
    return model
