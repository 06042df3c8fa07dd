"""Top-1/top-5 accuracy of a classifier checkpoint on one evaluation set.

The CUDA path keeps the GPU fed: DataLoader workers with pinned memory, channels_last inputs, bf16
autocast. On CPU the same code runs in fp32.
"""

from __future__ import annotations

import logging

from torch.utils.data import DataLoader

from clipmerge.data.classnames import load_classnames
from clipmerge.data.eval_sets import build_eval_set
from clipmerge.evaluation.predict import predict, topk_accuracy
from clipmerge.models.classifier import load_classifier
from clipmerge.models.clip import eval_transform
from clipmerge.models.device import loader_kwargs
from clipmerge.weights.checkpoint import classifier_arch

log = logging.getLogger(__name__)


def evaluate_checkpoint(weights, adapter: str, root, classnames: str | None, *, batch_size: int, workers: int,
                        device, desc: str = "evaluate") -> tuple[dict[int, float], int]:
    """Top-1/top-5 (percent) of the classifier ``weights`` on the set at ``root`` read by ``adapter``,
    and the number of images scored. ``classnames``: the head's class names spec (load_classnames)."""
    arch, _ = classifier_arch(weights)
    names = load_classnames(classnames) if classnames else None
    model = load_classifier(weights)
    eval_set = build_eval_set(adapter, root, eval_transform(arch, model), names)
    loader = DataLoader(eval_set.dataset, batch_size=batch_size, **loader_kwargs(device, workers))
    logits, labels = predict(model, loader, device, eval_set.project, desc=desc)
    return topk_accuracy(logits, labels), len(labels)
