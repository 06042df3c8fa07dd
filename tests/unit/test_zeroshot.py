"""The zero-shot classifier equals CLIP's own zero-shot prediction (100 * cosine for OpenAI CLIP)."""

import open_clip
import torch
import torch.nn.functional as F

from clipmerge.data.classnames import resolve_templates
from clipmerge.models.classifier import classifier_from_clip
from clipmerge.models.clip import create_clip
from clipmerge.models.zeroshot import zero_shot_head


def test_classifier_logits_equal_clip_zero_shot_logits(tiny_clip_file):
    clip = create_clip("clipmerge-tiny", str(tiny_clip_file))
    tokenizer = open_clip.get_tokenizer("clipmerge-tiny")
    classnames, templates = ["cat", "dog", "fox"], ["a photo of a {}.", "a sketch of a {}."]
    head = zero_shot_head(clip, tokenizer, classnames, templates, torch.device("cpu"))
    model = classifier_from_clip(clip, head).eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        image_features = F.normalize(clip.encode_image(images), dim=-1)
        class_embeddings = []
        for name in classnames:  # the reference recipe: normalise per template, mean, renormalise
            text = F.normalize(clip.encode_text(tokenizer([t.format(name) for t in templates])), dim=-1)
            class_embeddings.append(F.normalize(text.mean(0), dim=-1))
        expected = clip.logit_scale.exp() * image_features @ torch.stack(class_embeddings).T
        assert torch.allclose(model(images), expected, atol=1e-4)
    assert torch.equal(model.head.bias, torch.zeros(3))


def test_named_templates_resolve_to_open_clip_lists():
    assert len(resolve_templates(["openai_imagenet"])) == 80
    assert resolve_templates(["a {}.", "an image of {}"]) == ["a {}.", "an image of {}"]
