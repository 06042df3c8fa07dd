"""`clipmerge greedy-soup`: greedy soup of fine-tuned classifiers, judged on the held-out split.

The held-out images are decoded and resized once into a uint8 cache (``clipmerge.data.cache``; kept in
memory, or in ``--cache`` to reuse across runs); every ingredient and every candidate soup is then
evaluated on that cache. The search itself is ``clipmerge.merging.greedy_soup``.

Writes ``model.safetensors`` (the ingredients' header metadata kept), ``meta.json`` and ``greedy.json``
(ranking, every step, the accepted ingredients) beside it.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from clipmerge.checkpoint import git_sha, load_weights, meta_path, read_json, save_weights, write_json
from clipmerge.errors import ClipmergeError

log = logging.getLogger(__name__)
DIAGNOSTICS_NAME = "greedy.json"
ACCEPT = {"strict": ">", "geq": ">="}  # model-soups' code / the paper's Recipe 1


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inputs", required=True, nargs="+", metavar="CKPT", help="fine-tuned model.safetensors")
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
    parser.add_argument("--model-id", help="model id recorded in meta.json (default: the output's folder name)")
    parser.add_argument("--out", required=True, help="e.g. results/<study>/models/greedy_soup/model.safetensors")


def ingredient_ids(inputs: list[str]) -> dict[str, str]:
    """Model id (the checkpoint's folder name) -> checkpoint path; ids must be distinct."""
    ids = {}
    for path in inputs:
        model_id = Path(path).parent.name
        if model_id in ids:
            raise ClipmergeError(f"{ids[model_id]} and {path} have the same model id {model_id!r}")
        ids[model_id] = path
    return ids


def _pretrained(inputs: list[str]) -> str | None:
    """``pretrained`` from the first input's meta.json that has one."""
    for path in inputs:
        if meta_path(path).is_file():
            return read_json(meta_path(path)).get("pretrained")
    return None


def run(args: argparse.Namespace) -> int:
    from clipmerge.data.cache import load_or_build
    from clipmerge.data.splits import heldout_set, relative_paths
    from clipmerge.device import pick_device
    from clipmerge.evaluate import predict, topk_accuracy
    from clipmerge.merging.greedy_soup import greedy_soup
    from clipmerge.models import classifier_arch, eval_transform, load_classifier
    from clipmerge.streaming import common_layout

    if args.batch_size < 1:
        raise ClipmergeError(f"--batch-size must be >= 1, got {args.batch_size}")
    out = Path(args.out)
    paths = ingredient_ids(args.inputs)
    layout = common_layout(args.inputs)  # same tensors and header (arch, num_classes) in every input
    arch, num_classes = classifier_arch(args.inputs[0])
    device = pick_device(args.device)

    heldout = heldout_set(args.train_root, args.heldout)
    folder = heldout.dataset
    if len(folder.classes) != num_classes:
        raise ClipmergeError(
            f"{args.train_root}: {len(folder.classes)} class folders, "
            f"but the checkpoints' head has {num_classes} classes"
        )
    rel = relative_paths(folder)

    def with_transform(transform):
        folder.transform = transform
        return heldout

    cache = load_or_build(
        args.cache, with_transform,
        sample_ids=[rel[i] for i in heldout.indices],
        labels=[folder.samples[i][1] for i in heldout.indices],
        transform=eval_transform(arch), batch_size=args.batch_size, workers=args.workers,
    )
    model = load_classifier(args.inputs[0])

    def evaluate(state) -> float:
        began = time.perf_counter()
        model.load_state_dict(state, strict=True)
        logits, labels = predict(model, cache.batches(args.batch_size, device), device, desc="greedy soup")
        top1 = topk_accuracy(logits, labels, ks=(1,))[1]
        log.info("held-out top-1 %.2f (%.1f s)", top1, time.perf_counter() - began)
        return top1

    with cache:
        log.info("greedy soup over %d ingredients on %d held-out images", len(paths), len(cache))
        result = greedy_soup(
            list(paths), lambda model_id: load_weights(paths[model_id]), evaluate, accept=ACCEPT[args.accept]
        )

    save_weights(result.soup, out, metadata=layout.metadata)
    hparams = {"accept": args.accept, "heldout_size": len(cache)}
    write_json(meta_path(out), {
        "model": args.model_id or out.parent.name,
        "method": "greedy_soup",
        "arch": arch,
        "pretrained": _pretrained(args.inputs),
        "seed": None,
        "ingredients": result.ingredients,
        "hparams": hparams,
        "git_sha": git_sha(),
    })
    write_json(out.with_name(DIAGNOSTICS_NAME), {
        "model": args.model_id or out.parent.name,
        "metric": "held-out top-1 (%)",
        "inputs": paths,
        "heldout": str(args.heldout),
        **hparams,
        **result.to_json(),
    })
    log.info("wrote %s: %d of %d ingredients, held-out top-1 %.2f",
             out, len(result.ingredients), len(paths), result.best_accuracy)
    return 0
