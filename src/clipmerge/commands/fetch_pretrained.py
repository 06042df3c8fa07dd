"""`clipmerge fetch-pretrained`: a pre-trained CLIP (open_clip tag or local file), saved once as
safetensors the workflow can cache.

This is the only step that may download (open_clip's own cache); it runs as a local rule so compute
nodes without network never need it.
"""

from __future__ import annotations

from pathlib import Path

from clipmerge.models.clip import create_clip, save_clip


def configure(parser) -> None:
    parser.add_argument("--arch", required=True, help="open_clip architecture, e.g. ViT-B-32")
    parser.add_argument("--pretrained", required=True, help="open_clip pretrained tag (e.g. openai) or a local file")
    parser.add_argument("--out", required=True, help="output model.safetensors")


def run(args) -> None:
    model = create_clip(args.arch, args.pretrained)
    source = str(Path(args.pretrained).resolve()) if Path(args.pretrained).exists() else args.pretrained
    save_clip(model, args.out, args.arch, source)
    print(f"saved {args.arch} ({source}) -> {args.out}")
