"""`clipmerge evaluate`: top-1/top-5 of a classifier checkpoint on one evaluation set
(clipmerge.evaluation.evaluate), written as its eval JSON (clipmerge.evaluation.records)."""

from __future__ import annotations

import logging

from clipmerge.evaluation.evaluate import evaluate_checkpoint
from clipmerge.evaluation.records import write_eval
from clipmerge.models.device import pick_device

log = logging.getLogger(__name__)


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
    device = pick_device(args.device)
    accuracy, n = evaluate_checkpoint(args.model, args.adapter, args.root, args.classnames,
                                      batch_size=args.batch_size, workers=args.workers, device=device,
                                      desc=f"{args.model_id}/{args.eval_set}")
    write_eval(args.out, args.model_id, args.eval_set, args.adapter, accuracy, n)
    log.info("%s on %s: top1 %.2f top5 %.2f (n=%d)", args.model_id, args.eval_set, accuracy[1], accuracy[5], n)
