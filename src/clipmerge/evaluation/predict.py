"""Forward passes over batches of images, and top-k accuracy.

The CUDA path keeps the GPU fed: DataLoader workers with pinned memory, channels_last inputs. The image
tower runs in the evaluation precision (fp32, or bf16 autocast with ``amp_bf16``); the head and the
logits are always fp32, outside any autocast (ImageClassifier.classify).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from tqdm import tqdm

from clipmerge.models.device import eval_autocast


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    batches: Iterable,
    device: torch.device,
    project: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
    desc: str = "evaluate",
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected logits (fp32, CPU) and labels of the classifier ``model`` for every batch of (images,
    labels); the image tower runs in ``precision`` (clipmerge.models.device.EVAL_PRECISIONS)."""
    model.eval().to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    all_logits, all_labels = [], []
    for images, labels in tqdm(batches, desc=desc, leave=False, mininterval=5):
        images = images.to(device, non_blocking=True)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with eval_autocast(device, precision):
            embeddings = model.visual(images)
        logits = model.classify(embeddings)
        all_logits.append(project(logits).cpu())
        all_labels.append(labels)
    return torch.cat(all_logits), torch.cat(all_labels)


def ranked_classes(logits: torch.Tensor, k: int = 5) -> torch.Tensor:
    """The ``k`` best classes of each row (k capped at the class count), best first."""
    return logits.topk(min(k, logits.shape[1]), dim=1).indices


def ranking_accuracy(ranking: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[int, float]:
    """Percent of rows whose label is among the first k classes of ``ranking``."""
    if len(labels) == 0:
        return {k: float("nan") for k in ks}
    hits = ranking == labels[:, None]
    return {k: 100.0 * hits[:, :k].any(dim=1).float().mean().item() for k in ks}


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[int, float]:
    """Percent of rows whose label is among the k largest logits (k capped at the class count)."""
    if len(labels) == 0:
        return {k: float("nan") for k in ks}
    return ranking_accuracy(ranked_classes(logits, max(ks)), labels, ks)
