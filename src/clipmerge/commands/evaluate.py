"""`clipmerge evaluate`: top-1/top-5 of a classifier checkpoint on one or more evaluation sets
(clipmerge.evaluation.evaluate), each written as its own eval JSON (clipmerge.evaluation.records) with
the per-image predictions beside it (clipmerge.evaluation.predictions).

The model is loaded once for all its sets, so one process (one interpreter start) can serve a model's
every set; each result is written as soon as it is computed."""

from __future__ import annotations

import logging

from clipmerge import layout
from clipmerge.data.classnames import load_classnames
from clipmerge.errors import ClipmergeError
from clipmerge.evaluation.evaluate import SetSource, evaluate_model
from clipmerge.evaluation.predictions import write_predictions
from clipmerge.evaluation.records import write_eval
from clipmerge.models.classifier import load_classifier
from clipmerge.models.device import EVAL_PRECISIONS, pick_device
from clipmerge.weights.checkpoint import classifier_arch

log = logging.getLogger(__name__)


def configure(parser) -> None:
    parser.add_argument("--model", required=True, help="classifier checkpoint (model.safetensors)")
    parser.add_argument("--model-id", required=True, help="model id written into the results")
    parser.add_argument("--set", nargs=4, action="append", required=True, dest="sets",
                        metavar=("NAME", "ADAPTER", "ROOT", "OUT"),
                        help="an evaluation set: its name, dataset adapter (clipmerge.data.eval_sets), dataset "
                             "root and result JSON; repeat for more sets")
    parser.add_argument("--cache", nargs=2, action="append", default=[], metavar=("NAME", "FILE"),
                        help="read set NAME from this preprocessed-image cache (built or rebuilt if it does not "
                             "match the set's files and the model's transform)")
    parser.add_argument("--classnames", help="head class names: 'imagenet', world.json or a text file")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", choices=EVAL_PRECISIONS, default="fp32",
                        help="the image tower's precision (the head is always fp32)")


def run(args) -> None:
    caches = dict(args.cache)
    names = [name for name, *_ in args.sets]
    unknown = sorted(set(caches) - set(names))
    if unknown or len(set(names)) != len(names):
        raise ClipmergeError(f"--cache names sets {unknown} that no --set names" if unknown
                             else f"a set is named twice in --set: {names}")
    device = pick_device(args.device)
    arch, _ = classifier_arch(args.model)
    classnames = load_classnames(args.classnames) if args.classnames else None
    model = load_classifier(args.model)
    for name, adapter, root, out in args.sets:
        result = evaluate_model(model, arch, SetSource(adapter, root, caches.get(name)), classnames,
                                batch_size=args.batch_size, workers=args.workers, device=device,
                                desc=f"{args.model_id}/{name}", precision=args.precision)
        # The predictions first: an eval JSON never exists without the predictions it summarises.
        write_predictions(layout.predictions_beside(out), model=args.model_id, eval_set=name,
                          logits=result.logits.numpy(), labels=result.labels.numpy(), top1=result.top1.numpy(),
                          samples=result.samples)
        write_eval(out, args.model_id, name, adapter, result.accuracy, result.n, result.classes)
        log.info("%s on %s: top1 %.2f top5 %.2f (n=%d)", args.model_id, name, result.accuracy[1],
                 result.accuracy[5], result.n)
