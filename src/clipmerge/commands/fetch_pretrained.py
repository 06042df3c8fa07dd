"""`clipmerge fetch-pretrained`: a pre-trained CLIP (open_clip tag or local file), saved once as
safetensors the workflow can cache.

This is the only step that may download (open_clip's own cache); it runs as a local rule so compute
nodes without network never need it. For a tag, the recorded architecture is the one whose activation
matches the tag's (``ViT-B-32`` + ``openai`` -> ``ViT-B-32-quickgelu``) and the header records the
tag's preprocessing (clipmerge.models.clip), so every later stage rebuilds the network the weights
were trained as.
"""

from __future__ import annotations

from pathlib import Path

from clipmerge.models.clip import create_clip, faithful_arch, save_clip


def configure(parser) -> None:
    parser.add_argument("--arch", required=True, help="open_clip architecture, e.g. ViT-B-32")
    parser.add_argument("--pretrained", required=True, help="open_clip pretrained tag (e.g. openai) or a local file")
    parser.add_argument("--out", required=True, help="output model.safetensors")


def run(args) -> None:
    local = Path(args.pretrained).exists()
    arch = args.arch if local else faithful_arch(args.arch, args.pretrained)
    model = create_clip(arch, args.pretrained)
    source = str(Path(args.pretrained).resolve()) if local else args.pretrained
    save_clip(model, args.out, arch, source)
    print(f"saved {arch} ({source}) -> {args.out}")
