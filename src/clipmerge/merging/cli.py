"""`clipmerge merge`: merge classifier checkpoints with model_stock, uniform_soup or wise_ft.

Writes ``model.safetensors`` (streamed, atomic), then ``meta.json`` and ``merge.json`` beside it.
Everything is validated before the first write, so a failed merge leaves earlier outputs as they were.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from clipmerge.checkpoint import git_sha, meta_path, read_json, write_json
from clipmerge.errors import ClipmergeError
from clipmerge.merging.driver import merge_checkpoints
from clipmerge.merging.registry import STREAMED_METHODS
from clipmerge.merging.wise_ft import check_alpha
from clipmerge.models import classifier_arch

log = logging.getLogger(__name__)
DIAGNOSTICS_NAME = "merge.json"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, choices=STREAMED_METHODS)
    parser.add_argument("--inputs", required=True, nargs="+", metavar="CKPT", help="fine-tuned model.safetensors")
    parser.add_argument("--anchor", metavar="CKPT", help="zero-shot model.safetensors (model_stock, wise_ft)")
    parser.add_argument("--out", required=True, help="output path, e.g. results/<study>/models/<id>/model.safetensors")
    parser.add_argument("--model-id", help="model id recorded in meta.json (default: the output's folder name)")
    wise = parser.add_argument_group("wise_ft")
    wise.add_argument("--alpha", type=float, help="weight of the fine-tuned model, in [0, 1] (default 0.5)")
    stock = parser.add_argument_group("model_stock")
    stock.add_argument(
        "--average", choices=("angles", "cosines"),
        help="N>2: mean of pairwise angles (authors, default) or of cosines (mergekit)",
    )
    stock.add_argument(
        "--no-clamp-negative", action="store_true",
        help="keep t<0 for a negative mean cosine instead of falling back to the anchor",
    )


def method_options(args: argparse.Namespace) -> dict:
    """The method's keyword options from the flags; a flag of another method is an error."""
    if args.method != "wise_ft" and args.alpha is not None:
        raise ClipmergeError(f"--alpha applies to wise_ft, not {args.method}")
    if args.method != "model_stock" and (args.average is not None or args.no_clamp_negative):
        raise ClipmergeError(f"--average/--no-clamp-negative apply to model_stock, not {args.method}")
    if args.method == "wise_ft":
        return {"alpha": check_alpha(0.5 if args.alpha is None else args.alpha)}
    if args.method == "model_stock":
        return {"average": args.average or "angles", "clamp_negative": not args.no_clamp_negative}
    return {}


def _pretrained(inputs: list[str], anchor: str | None) -> str | None:
    """``pretrained`` from the anchor's meta.json, else from the inputs' (warning if they disagree)."""
    sources = [anchor] if anchor else inputs
    values = {}
    for path in sources:
        if meta_path(path).is_file():
            values[path] = read_json(meta_path(path)).get("pretrained")
    if len(set(values.values())) > 1:
        log.warning("inputs disagree on 'pretrained' (%s); recording the first", values)
    return next(iter(values.values()), None)


def run(args: argparse.Namespace) -> int:
    options = method_options(args)
    out = Path(args.out)
    model_id = args.model_id or out.parent.name
    arch, _ = classifier_arch(args.inputs[0])  # the inputs agree with it, or merge_checkpoints refuses
    pretrained = _pretrained(args.inputs, args.anchor)

    report = merge_checkpoints(args.method, args.inputs, out, anchor=args.anchor, options=options)

    anchor_id = Path(args.anchor).parent.name if args.anchor else None
    hparams = {**options, "anchor": anchor_id} if anchor_id else options
    write_json(meta_path(out), {
        "model": model_id,
        "method": args.method,
        "arch": arch,
        "pretrained": pretrained,
        "seed": None,
        "ingredients": [Path(p).parent.name for p in args.inputs],
        "hparams": hparams,
        "git_sha": git_sha(),
    })
    write_json(out.with_name(DIAGNOSTICS_NAME), {
        "model": model_id,
        "inputs": [str(p) for p in args.inputs],
        "anchor": args.anchor,
        **report.to_json(),
    })
    log.info("wrote %s (%s of %d inputs)", out, args.method, len(args.inputs))
    return 0
