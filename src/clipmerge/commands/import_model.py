"""`clipmerge import-model`: a fine-tune made elsewhere (model-soups, wise-ft, open_clip_train, a plain
open_clip state dict) as this project's classifier checkpoint + meta.json (clipmerge.models.external)."""

from __future__ import annotations

import json

from clipmerge import layout
from clipmerge.errors import ClipmergeError
from clipmerge.models.external import import_checkpoint, recipe_hparams


def configure(parser) -> None:
    parser.add_argument("--source", required=True, help="the external checkpoint (.pt/.pth/.bin/.safetensors)")
    parser.add_argument("--template", required=True,
                        help="the study's zero-shot classifier: the architecture to match, the header to "
                             "write, and the head of a checkpoint that has none")
    parser.add_argument("--model-id", required=True, help="imported_<name>")
    parser.add_argument("--hparams-json", default="{}",
                        help="the model's hyper-parameters as a JSON object (its hparam_info.json entry)")
    parser.add_argument("--require-head", action="store_true",
                        help="refuse a checkpoint without a classification head instead of giving it the "
                             "zero-shot head")
    parser.add_argument("--out", required=True, help="output model.safetensors")


def run(args) -> None:
    if layout.parse_model_id(args.model_id).kind != layout.IMPORTED:
        raise ClipmergeError(f"--model-id {args.model_id!r}: an imported model's id is imported_<name>")
    try:
        entry = json.loads(args.hparams_json)
    except ValueError as e:
        raise ClipmergeError(f"--hparams-json: not JSON ({e})") from e
    if not isinstance(entry, dict):
        raise ClipmergeError("--hparams-json: expected a JSON object")
    provenance = import_checkpoint(args.source, args.template, args.out, head_required=args.require_head)
    template = layout.read_meta(args.template)
    layout.write_meta(args.out, layout.model_meta_record(
        args.model_id, layout.IMPORTED, template["arch"], template.get("pretrained"),
        hparams={**recipe_hparams(entry), **provenance}))
    print(f"{args.source} ({provenance['format']}, head from {provenance['head']}) -> {args.out}")
