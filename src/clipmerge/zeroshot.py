"""The zero-shot classifier: the pre-trained image tower + a head from open_clip's zero-shot builder.

Head = logit_scale.exp() x the normalised mean of normalised template embeddings per class, zero
bias (model-soups/wise-ft zeroshot.py); logits are then 100 * cosine for OpenAI CLIP.
"""

from __future__ import annotations

import open_clip
import torch

from clipmerge.checkpoint import git_sha, meta_path, read_meta, write_json
from clipmerge.data.classnames import load_classnames, load_templates
from clipmerge.device import pick_device
from clipmerge.errors import ClipmergeError
from clipmerge.models import classifier_from_clip, create_clip, save_classifier


def zero_shot_head(model, tokenizer, classnames, templates, device) -> torch.Tensor:
    """[num_classes, embed_dim] head weights, scaled by the model's logit scale."""
    model.eval().to(device)
    with torch.inference_mode():
        weights = open_clip.build_zero_shot_classifier(
            model, tokenizer, classnames, templates, num_classes_per_batch=10, device=device, use_tqdm=True
        )
        return (model.logit_scale.exp() * weights.T).float().cpu()


def resolve_templates(values: list[str]) -> list:
    """One name/file (see load_templates) or literal templates containing '{}'."""
    if len(values) == 1 and "{}" not in values[0]:
        return load_templates(values[0])
    bad = [v for v in values if "{}" not in v]
    if bad:
        raise ClipmergeError(f"templates must contain '{{}}': {bad}")
    return values


def configure(parser) -> None:
    parser.add_argument("--pretrained", required=True, help="pre-trained CLIP (safetensors from fetch/pretrain)")
    parser.add_argument("--classnames", required=True, help="'imagenet', a world.json or a text file")
    parser.add_argument("--templates", nargs="+", required=True,
                        help="'openai_imagenet', 'simple_imagenet', a file, or literal templates with '{}'")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", required=True, help="output model.safetensors")


def run(args) -> None:
    pre_meta = read_meta(args.pretrained)
    arch = pre_meta["arch"]
    device = pick_device(args.device)
    clip = create_clip(arch, args.pretrained)
    classnames = load_classnames(args.classnames)
    templates = resolve_templates(args.templates)
    head = zero_shot_head(clip, open_clip.get_tokenizer(arch), classnames, templates, device)
    model = classifier_from_clip(clip.cpu(), head)
    save_classifier(model, args.out, arch)
    write_json(meta_path(args.out), {
        "model": "zeroshot", "method": "zeroshot", "arch": arch, "pretrained": pre_meta.get("pretrained"),
        "seed": None, "ingredients": [],
        "hparams": {"num_classes": len(classnames), "num_templates": len(templates)}, "git_sha": git_sha(),
    })
    print(f"zero-shot head: {len(classnames)} classes x {len(templates)} templates -> {args.out}")
