"""`clipmerge merge`: merge classifier checkpoints with model_stock, uniform_soup, wise_ft,
task_arithmetic, ties, dare, dare_ties or slerp (clipmerge.merging.driver.merge_models).

Writes ``model.safetensors`` (streamed, atomic), then ``meta.json`` and ``merge.json`` beside it.
"""

from __future__ import annotations

import argparse

from clipmerge import layout
from clipmerge.errors import ClipmergeError
from clipmerge.merging.driver import merge_models
from clipmerge.merging.registry import STREAMED_METHODS

WISE_FT_ALPHA = 0.5
# The task-vector merges' options and their defaults, used for a flag not given: the same as the config
# schema's merge.<method> defaults and the methods' keyword defaults (tests/unit/test_contracts.py). A
# flag such as --scale is shared by methods whose defaults differ, so the flags themselves default to None.
METHOD_DEFAULTS = {
    "task_arithmetic": {"scale": 0.3},
    "ties": {"density": 0.2, "scale": 1.0},
    "dare": {"drop_rate": 0.9, "scale": 1.0, "mask_seed": 0},
    "dare_ties": {"drop_rate": 0.9, "scale": 1.0, "mask_seed": 0},
    "slerp": {"t": 0.5, "space": "task_vectors"},
}
TASK_VECTOR_FLAGS = ("scale", "density", "drop_rate", "mask_seed", "t", "space")  # their argparse dests


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, choices=STREAMED_METHODS)
    parser.add_argument("--inputs", required=True, nargs="+", metavar="CKPT",
                        help="fine-tuned model.safetensors, each with its meta.json beside it")
    parser.add_argument("--anchor", metavar="CKPT",
                        help="zero-shot model.safetensors (every method but uniform_soup)")
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
    vectors = parser.add_argument_group("task_arithmetic, ties, dare, dare_ties, slerp")
    vectors.add_argument("--scale", type=float, help="lambda, the weight of the merged task vector "
                                                     "(default 0.3 for task_arithmetic, else 1.0)")
    vectors.add_argument("--density", type=float, help="ties: fraction of each task vector kept, in (0, 1] "
                                                       "(default 0.2)")
    vectors.add_argument("--drop-rate", type=float, help="dare, dare_ties: probability of dropping an element, "
                                                         "in [0, 1) (default 0.9)")
    vectors.add_argument("--mask-seed", type=int, help="dare, dare_ties: seed of the drop masks (default 0)")
    vectors.add_argument("--t", type=float, help="slerp: position from the first input (0) to the second (1), "
                                                 "default 0.5")
    vectors.add_argument("--space", choices=("task_vectors", "weights"),
                         help="slerp: interpolate the task vectors w_i - w0 (default) or the weights")


def method_options(args: argparse.Namespace) -> dict:
    """The method's keyword options from the flags; a flag of another method is an error."""
    if args.method != "wise_ft" and args.alpha is not None:
        raise ClipmergeError(f"--alpha applies to wise_ft, not {args.method}")
    if args.method != "model_stock" and (args.average is not None or args.no_clamp_negative):
        raise ClipmergeError(f"--average/--no-clamp-negative apply to model_stock, not {args.method}")
    given = {dest: getattr(args, dest) for dest in TASK_VECTOR_FLAGS if getattr(args, dest) is not None}
    defaults = METHOD_DEFAULTS.get(args.method, {})
    foreign = [dest for dest in given if dest not in defaults]
    if foreign:
        users = ", ".join(m for m, keys in METHOD_DEFAULTS.items() if foreign[0] in keys)
        raise ClipmergeError(f"--{foreign[0].replace('_', '-')} applies to {users}, not {args.method}")
    if args.method == "wise_ft":
        return {"alpha": WISE_FT_ALPHA if args.alpha is None else args.alpha}
    if args.method == "model_stock":
        return {"average": args.average or "angles", "clamp_negative": not args.no_clamp_negative}
    return {**defaults, **given}


def run(args: argparse.Namespace) -> int:
    options = method_options(args)
    model_id = args.model_id or (layout.wise_ft_id(options["alpha"]) if args.method == "wise_ft" else args.method)
    merge_models(args.method, args.inputs, args.out, model_id=model_id, anchor=args.anchor, options=options)
    return 0
