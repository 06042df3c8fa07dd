"""Contrastive pre-training of a tiny CLIP on the demo world's captioned images (open_clip's ClipLoss).

This stands in for CLIP's web-scale pre-training in the embedded demo: the captioned set covers every
style (photo, rendition, sketch, unusual pose, clutter), so the resulting zero-shot model is robust
the way real CLIP is, while fine-tuning later sees photos only.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from pathlib import Path

import open_clip
import torch
from PIL import Image
from tqdm import tqdm

from clipmerge.errors import ClipmergeError
from clipmerge.models.clip import create_clip, eval_transform, preprocess_cfg
from clipmerge.training.schedule import lr_at

log = logging.getLogger(__name__)


def load_captioned(world_dir, transform, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """All pre-training images (preprocessed) and tokenised captions, decoded once: the set is small."""
    table = Path(world_dir) / "pretrain" / "captions.tsv"
    if not table.is_file():
        raise ClipmergeError(f"{table}: caption table not found (expected <world>/pretrain/captions.tsv)")
    with open(table, newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    if not rows:
        raise ClipmergeError(f"{table}: no captions")
    images = torch.stack([
        transform(Image.open(table.parent / "images" / name).convert("RGB"))
        for name, _ in tqdm(rows, desc="decode", mininterval=5)
    ])
    return images, tokenizer([caption for _, caption in rows])


def pretrain(model, images, texts, epochs: int, batch_size: int, lr: float, seed: int) -> list[float]:
    """Train both towers with the symmetric InfoNCE loss; returns the mean loss of each epoch."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0}],
                                  lr=lr)
    loss_fn = open_clip.ClipLoss()
    steps_per_epoch = len(images) // batch_size
    if steps_per_epoch == 0:
        raise ClipmergeError(f"{len(images)} pre-training images are fewer than one batch of {batch_size}")
    total, step, losses = epochs * steps_per_epoch, 0, []
    # 5 % warm-up, at least one step; the fine-tuning schedule otherwise (cosine to ~0).
    warmup = max(1, total // 20)
    model.train()
    start = time.time()
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        flip = torch.rand(len(images), generator=generator) < 0.5
        epoch_loss = 0.0
        for b in tqdm(range(steps_per_epoch), desc=f"pretrain epoch {epoch}", leave=False, mininterval=5):
            idx = order[b * batch_size:(b + 1) * batch_size]
            batch = torch.where(flip[idx, None, None, None], images[idx].flip(-1), images[idx])
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, lr, warmup, total)
            image_features, text_features, logit_scale = model(batch, texts[idx])
            loss = loss_fn(image_features, text_features, logit_scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # CLIP clamps the learned temperature at 100
                model.logit_scale.clamp_(0, math.log(100))
            epoch_loss += loss.item()
            step += 1
        losses.append(epoch_loss / steps_per_epoch)
        log.info("epoch %d loss %.4f (%.0f s)", epoch, losses[-1], time.time() - start)
    return losses


def pretrain_demo_clip(world_dir, arch: str, epochs: int, batch_size: int, lr: float, seed: int):
    """A ``arch`` CLIP pre-trained on the demo world, and the hyper-parameters to record with it."""
    torch.manual_seed(seed)
    model = create_clip(arch)
    transform = eval_transform(preprocess_cfg(arch, model))
    images, texts = load_captioned(world_dir, transform, open_clip.get_tokenizer(arch))
    losses = pretrain(model, images, texts, epochs, batch_size, lr, seed)
    hparams = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
               "n_pairs": len(images), "final_loss": losses[-1]}
    return model, hparams
