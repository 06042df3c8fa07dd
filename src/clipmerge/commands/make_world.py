"""`clipmerge make-world`: generate the embedded demo's synthetic image world."""

from __future__ import annotations

import argparse
import logging
import time

from clipmerge.errors import ClipmergeError
from clipmerge.world.generate import WorldConfig, write_world

log = logging.getLogger(__name__)
DEFAULTS = WorldConfig()
# Below 16 px the shapes lose their corners; above 256 px drawing gets slow and the demo gains nothing.
MIN_SIZE, MAX_SIZE = 16, 256


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the make-world flags to ``parser``."""
    parser.add_argument("--out", required=True, help="output directory (replaced if it holds a previous world)")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="world seed (default: %(default)s)")
    parser.add_argument(
        "--image-size", type=int, default=DEFAULTS.image_size, help="image side in pixels (default: %(default)s)"
    )
    parser.add_argument(
        "--pretrain", type=int, default=DEFAULTS.pretrain, help="captioned pre-training images (default: %(default)s)"
    )
    parser.add_argument(
        "--train-per-class",
        type=int,
        default=DEFAULTS.train_per_class,
        help="fine-tuning images per class (default: %(default)s)",
    )
    parser.add_argument(
        "--test-per-class",
        type=int,
        default=DEFAULTS.test_per_class,
        help="in-distribution test images per class (default: %(default)s)",
    )
    parser.add_argument(
        "--shift-per-class",
        type=int,
        default=DEFAULTS.shift_per_class,
        help="images per class in each shifted test set (default: %(default)s)",
    )


def config_from_args(args: argparse.Namespace) -> WorldConfig:
    """Validate the flags and turn them into a WorldConfig.

    Raises:
        ClipmergeError: a flag is out of range; the message names it.
    """
    counts = {
        "--pretrain": args.pretrain,
        "--train-per-class": args.train_per_class,
        "--test-per-class": args.test_per_class,
        "--shift-per-class": args.shift_per_class,
    }
    for flag, value in counts.items():
        if value < 1:
            raise ClipmergeError(f"{flag} must be at least 1, got {value}")
    if not MIN_SIZE <= args.image_size <= MAX_SIZE:
        raise ClipmergeError(f"--image-size must be between {MIN_SIZE} and {MAX_SIZE}, got {args.image_size}")
    if args.seed < 0:
        raise ClipmergeError(f"--seed must be non-negative, got {args.seed}")
    return WorldConfig(
        seed=args.seed,
        image_size=args.image_size,
        pretrain=args.pretrain,
        train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
        shift_per_class=args.shift_per_class,
    )


def run(args: argparse.Namespace) -> int:
    """Generate the world described by ``args`` into ``args.out``."""
    config = config_from_args(args)
    start = time.perf_counter()
    manifest = write_world(args.out, config)
    total = sum(split["n"] for split in manifest["splits"].values())
    log.info("wrote %d images to %s in %.1f s", total, args.out, time.perf_counter() - start)
    return 0
