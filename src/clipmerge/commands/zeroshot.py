"""`clipmerge zeroshot`: the zero-shot classifier of a pre-trained CLIP (clipmerge.models.zeroshot)."""

from __future__ import annotations

from clipmerge import layout
from clipmerge.data.classnames import load_classnames, resolve_templates
from clipmerge.models.classifier import save_classifier
from clipmerge.models.device import pick_device
from clipmerge.models.zeroshot import zeroshot_classifier


def configure(parser) -> None:
    parser.add_argument("--pretrained", required=True, help="pre-trained CLIP (safetensors from fetch/pretrain)")
    parser.add_argument("--classnames", required=True, help="'imagenet', a world.json or a text file")
    parser.add_argument("--templates", nargs="+", required=True,
                        help="'openai_imagenet', 'simple_imagenet', a file, or literal templates with '{}'")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", required=True, help="output model.safetensors")


def run(args) -> None:
    pre_meta = layout.read_meta(args.pretrained)
    arch = pre_meta["arch"]
    classnames = load_classnames(args.classnames)
    templates = resolve_templates(args.templates)
    model = zeroshot_classifier(arch, args.pretrained, classnames, templates, pick_device(args.device))
    save_classifier(model, args.out, arch)
    layout.write_meta(args.out, layout.model_meta_record(
        layout.ZEROSHOT, layout.ZEROSHOT, arch, pre_meta.get("pretrained"),
        hparams={"num_classes": len(classnames), "num_templates": len(templates)}))
    print(f"zero-shot head: {len(classnames)} classes x {len(templates)} templates -> {args.out}")
