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
from clipmerge.models import create_clip, eval_transform
from clipmerge.pretrained import save_clip

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


def cosine_lr(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


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
                group["lr"] = cosine_lr(step, total, warmup=max(1, total // 20), base=lr)
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


def configure(parser) -> None:
    parser.add_argument("--world", required=True, help="demo world folder (with pretrain/captions.tsv)")
    parser.add_argument("--arch", default="clipmerge-tiny")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output model.safetensors")


def run(args) -> None:
    torch.manual_seed(args.seed)
    model = create_clip(args.arch)
    images, texts = load_captioned(args.world, eval_transform(args.arch), open_clip.get_tokenizer(args.arch))
    losses = pretrain(model, images, texts, args.epochs, args.batch_size, args.lr, args.seed)
    hparams = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
               "n_pairs": len(images), "final_loss": losses[-1]}
    save_clip(model, args.out, args.arch, "demo", hparams)
