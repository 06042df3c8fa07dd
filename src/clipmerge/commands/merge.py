"""`clipmerge merge`: merge classifier checkpoints with model_stock, uniform_soup or wise_ft
(clipmerge.merging.driver.merge_models).

Writes ``model.safetensors`` (streamed, atomic), then ``meta.json`` and ``merge.json`` beside it.
"""

from __future__ import annotations

import argparse

from clipmerge import layout
from clipmerge.errors import ClipmergeError
from clipmerge.merging.driver import merge_models
from clipmerge.merging.registry import STREAMED_METHODS

WISE_FT_ALPHA = 0.5


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, choices=STREAMED_METHODS)
    parser.add_argument("--inputs", required=True, nargs="+", metavar="CKPT",
                        help="fine-tuned model.safetensors, each with its meta.json beside it")
    parser.add_argument("--anchor", metavar="CKPT", help="zero-shot model.safetensors (model_stock, wise_ft)")
    parser.add_argument("--out", required=True, help="output path, e.g. results/<study>/models/<id>/model.safetensors")
    parser.add_argument("--model-id", help="model id recorded in meta.json (default: the method's, "
                                           "wise_ft_a<alpha> for wise_ft)")
    wise = parser.add_argument_group("wise_ft")
    wise.add_argument("--alpha", type=float,
                      help=f"weight of the fine-tuned model, in [0, 1] (default {WISE_FT_ALPHA})")
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
        return {"alpha": WISE_FT_ALPHA if args.alpha is None else args.alpha}
    if args.method == "model_stock":
        return {"average": args.average or "angles", "clamp_negative": not args.no_clamp_negative}
    return {}


def run(args: argparse.Namespace) -> int:
    options = method_options(args)
    model_id = args.model_id or (layout.wise_ft_id(options["alpha"]) if args.method == "wise_ft" else args.method)
    merge_models(args.method, args.inputs, args.out, model_id=model_id, anchor=args.anchor, options=options)
    return 0
