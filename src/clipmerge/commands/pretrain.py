"""`clipmerge pretrain`: contrastive pre-training of a tiny CLIP on the demo world
(clipmerge.training.pretrain)."""

from __future__ import annotations

from pathlib import Path

from clipmerge.models.clip import TINY_ARCH, save_clip
from clipmerge.training.pretrain import pretrain_demo_clip


def configure(parser) -> None:
    parser.add_argument("--world", required=True,
                        help="the demo world's world.json (its folder holds pretrain/captions.tsv)")
    parser.add_argument("--arch", default=TINY_ARCH)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output model.safetensors")


def run(args) -> None:
    model, hparams = pretrain_demo_clip(Path(args.world).parent, args.arch, args.epochs, args.batch_size, args.lr,
                                        args.seed)
    save_clip(model, args.out, args.arch, "demo", hparams)
