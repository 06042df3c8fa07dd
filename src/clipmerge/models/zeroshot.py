"""The zero-shot classifier: the pre-trained image tower + a head from open_clip's zero-shot builder.

Head = logit_scale.exp() x the normalised mean of normalised template embeddings per class, zero
bias (model-soups/wise-ft zeroshot.py); logits are then 100 * cosine for OpenAI CLIP.
"""

from __future__ import annotations

import open_clip
import torch

from clipmerge.models.classifier import ImageClassifier, classifier_from_clip
from clipmerge.models.clip import create_clip


def zero_shot_head(model, tokenizer, classnames, templates, device) -> torch.Tensor:
    """[num_classes, embed_dim] head weights, scaled by the model's logit scale."""
    model.eval().to(device)
    with torch.inference_mode():
        weights = open_clip.build_zero_shot_classifier(
            model, tokenizer, classnames, templates, num_classes_per_batch=10, device=device, use_tqdm=True
        )
        return (model.logit_scale.exp() * weights.T).float().cpu()


def zeroshot_classifier(arch: str, pretrained, classnames: list[str], templates: list, device) -> ImageClassifier:
    """The zero-shot classifier of the pre-trained CLIP ``pretrained`` (a weights file) of ``arch``."""
    clip = create_clip(arch, pretrained)
    head = zero_shot_head(clip, open_clip.get_tokenizer(arch), classnames, templates, device)
    return classifier_from_clip(clip.cpu(), head)
