"""`clipmerge cache-eval-set`: decode and preprocess an evaluation set once (clipmerge.data.cache), for
every model's evaluation to read (clipmerge.evaluation.evaluate)."""

from __future__ import annotations

import logging

from clipmerge.data.classnames import load_classnames
from clipmerge.evaluation.evaluate import SetSource, build_cache
from clipmerge.models.clip import checkpoint_preprocess, eval_transform

log = logging.getLogger(__name__)


def configure(parser) -> None:
    parser.add_argument("--weights", required=True,
                        help="a checkpoint of the study (the pre-trained CLIP): its recorded preprocess config "
                             "gives the eval transform that is cached")
    parser.add_argument("--adapter", required=True, help="dataset adapter (see clipmerge.data.eval_sets)")
    parser.add_argument("--root", required=True, help="dataset root folder")
    parser.add_argument("--classnames", help="head class names: 'imagenet', world.json or a text file")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes for decoding")
    parser.add_argument("--out", required=True, help="cache file (.safetensors)")


def run(args) -> None:
    classnames = load_classnames(args.classnames) if args.classnames else None
    transform = eval_transform(checkpoint_preprocess(args.weights))
    n = build_cache(SetSource(args.adapter, args.root, args.out), transform, classnames,
                    batch_size=args.batch_size, workers=args.workers)
    log.info("%s: %d images cached in %s", args.root, n, args.out)
