"""`clipmerge greedy-soup`: greedy soup of fine-tuned classifiers, judged on the held-out split
(clipmerge.merging.greedy_heldout)."""

from __future__ import annotations

import argparse

from clipmerge.merging.greedy_heldout import ACCEPT, make_greedy_soup
from clipmerge.models.device import EVAL_PRECISIONS, pick_device


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inputs", required=True, nargs="+", metavar="CKPT",
                        help="fine-tuned model.safetensors, each with its meta.json beside it")
    parser.add_argument("--train-root", required=True, help="training ImageFolder root the held-out files are in")
    parser.add_argument("--heldout", required=True, help="held-out file list (clipmerge split-heldout)")
    parser.add_argument(
        "--accept", choices=sorted(ACCEPT), default="strict",
        help="keep a candidate if the soup's accuracy is > (strict, model-soups code) or >= (geq, paper)",
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--workers", type=int, default=2, help="processes decoding images while the cache is built")
    parser.add_argument(
        "--cache", metavar="PATH",
        help="preprocessed held-out images (safetensors); reused if it matches, else (re)built there. "
        "Default: build in memory",
    )
    parser.add_argument("--precision", choices=EVAL_PRECISIONS, default="fp32",
                        help="the image tower's precision on the held-out images (the head is always fp32)")
    parser.add_argument("--model-id", default="greedy_soup", help="model id recorded in meta.json")
    parser.add_argument("--out", required=True, help="e.g. results/<study>/models/greedy_soup/model.safetensors")


def run(args: argparse.Namespace) -> int:
    make_greedy_soup(args.inputs, args.out, model_id=args.model_id, train_root=args.train_root,
                     heldout=args.heldout, accept=args.accept, batch_size=args.batch_size,
                     device=pick_device(args.device), workers=args.workers, cache=args.cache,
                     precision=args.precision)
    return 0
