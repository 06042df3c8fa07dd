"""Top-1/top-5 accuracy of a classifier checkpoint on one evaluation set.

The CUDA path keeps the GPU fed: DataLoader workers with pinned memory, channels_last inputs, bf16
autocast. On CPU the same code runs in fp32.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from clipmerge.checkpoint import write_json
from clipmerge.device import autocast, loader_kwargs, pick_device

log = logging.getLogger(__name__)


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    batches: Iterable,
    device: torch.device,
    project: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
    desc: str = "evaluate",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected logits (fp32, CPU) and labels for every batch of (images, labels)."""
    model.eval().to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    all_logits, all_labels = [], []
    for images, labels in tqdm(batches, desc=desc, leave=False, mininterval=5):
        images = images.to(device, non_blocking=True)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            logits = model(images)
        all_logits.append(project(logits.float()).cpu())
        all_labels.append(labels)
    return torch.cat(all_logits), torch.cat(all_labels)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[int, float]:
    """Percent of rows whose label is among the k largest logits (k capped at the class count)."""
    if len(labels) == 0:
        return {k: float("nan") for k in ks}
    ranked = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = ranked == labels[:, None]
    return {k: 100.0 * hits[:, :k].any(dim=1).float().mean().item() for k in ks}


def configure(parser) -> None:
    parser.add_argument("--model", required=True, help="classifier checkpoint (model.safetensors)")
    parser.add_argument("--model-id", required=True, help="model id written into the result")
    parser.add_argument("--eval-set", required=True, help="evaluation set name written into the result")
    parser.add_argument("--adapter", required=True, help="dataset adapter (see clipmerge.data.eval_sets)")
    parser.add_argument("--root", required=True, help="dataset root folder")
    parser.add_argument("--classnames", help="head class names: 'imagenet', world.json or a text file")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--out", required=True, help="result JSON")


def run(args) -> None:
    from clipmerge.data.classnames import load_classnames
    from clipmerge.data.eval_sets import build_eval_set
    from clipmerge.models import classifier_arch, eval_transform, load_classifier

    device = pick_device(args.device)
    arch, _ = classifier_arch(args.model)
    classnames = load_classnames(args.classnames) if args.classnames else None
    model = load_classifier(args.model)
    eval_set = build_eval_set(args.adapter, args.root, eval_transform(arch, model), classnames)
    loader = DataLoader(eval_set.dataset, batch_size=args.batch_size, **loader_kwargs(device, args.workers))
    logits, labels = predict(model, loader, device, eval_set.project, desc=f"{args.model_id}/{args.eval_set}")
    acc = topk_accuracy(logits, labels)
    result = {
        "model": args.model_id,
        "eval_set": args.eval_set,
        "adapter": args.adapter,
        "top1": acc[1],
        "top5": acc[5],
        "n": len(labels),
    }
    write_json(args.out, result)
    log.info("%s on %s: top1 %.2f top5 %.2f (n=%d)", args.model_id, args.eval_set, acc[1], acc[5], len(labels))
