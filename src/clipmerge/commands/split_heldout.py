"""`clipmerge split-heldout`: the held-out file list of a training set (clipmerge.data.splits)."""

from __future__ import annotations

from clipmerge.data.splits import choose_heldout, image_folder, write_split
from clipmerge.errors import ClipmergeError


def configure(parser) -> None:
    parser.add_argument("--train-root", required=True, help="training ImageFolder root")
    parser.add_argument("--per-class", type=int, required=True, help="held-out images per class (26 for ImageNet)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw")
    parser.add_argument("--out", required=True, help="output file list")


def run(args) -> None:
    if args.per_class < 1:
        raise ClipmergeError(f"--per-class must be >= 1, got {args.per_class}")
    paths = choose_heldout(image_folder(args.train_root), args.per_class, args.seed)
    write_split(paths, args.out)
    print(f"held out {len(paths)} images of {args.train_root} -> {args.out}")
