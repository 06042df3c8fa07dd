"""`clipmerge split-heldout`: the held-out file list of a training set (clipmerge.data.splits)."""

from __future__ import annotations

from clipmerge.data.splits import (
    choose_heldout,
    heldout_from_mask,
    image_folder,
    load_mask,
    relative_paths,
    write_split,
)
from clipmerge.errors import ClipmergeError


def configure(parser) -> None:
    parser.add_argument("--train-root", required=True, help="training ImageFolder root")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--per-class", type=int, help="held-out images per class, drawn with --seed (26 for ImageNet)")
    how.add_argument("--mask", help="a 0/1 .npy mask over the folder's images, 1 = held out (model-soups' "
                                    "imagenet_98_idxs.npy)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw")
    parser.add_argument("--out", required=True, help="output file list")


def run(args) -> None:
    folder = image_folder(args.train_root)
    if args.mask:
        paths = heldout_from_mask(relative_paths(folder), load_mask(args.mask), args.mask)
    elif args.per_class < 1:
        raise ClipmergeError(f"--per-class must be >= 1, got {args.per_class}")
    else:
        paths = choose_heldout(folder, args.per_class, args.seed)
    write_split(paths, args.out)
    print(f"held out {len(paths)} images of {args.train_root} -> {args.out}")
