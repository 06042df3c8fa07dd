"""fetch-pretrained with an open_clip *tag*: the activation and the preprocessing the tag was trained
with are recorded once and rebuilt by every later stage.

No weights can be downloaded here, so each test points the tag's open_clip entry at a local file
(open_clip's ``download_pretrained`` returns a cfg's ``file`` as is); everything else — the tag's
config, the architecture choice, loading, saving, reloading — is open_clip's and clipmerge's real path.
"""

import open_clip
import torch
from open_clip.pretrained import _PRETRAINED
from open_clip.transformer import QuickGELU

from clipmerge.cli import main
from clipmerge.files import read_json
from clipmerge.models.classifier import load_classifier
from clipmerge.models.clip import checkpoint_preprocess, create_clip, eval_transform, faithful_arch, preprocess_cfg
from clipmerge.weights.checkpoint import header_metadata


def local_tag(monkeypatch, tmp_path, arch, tag, **overrides):
    """Make open_clip's ``arch``/``tag`` entry load a random ``arch`` state dict from a local .pt file."""
    torch.manual_seed(0)
    path = tmp_path / f"{arch}-{tag}.pt"
    torch.save(open_clip.create_model(arch).state_dict(), path)
    entry = {**open_clip.get_pretrained_cfg(arch, tag), **overrides, "file": str(path)}
    monkeypatch.setitem(_PRETRAINED.setdefault(arch, {}), tag, entry)
    return path


def fetch_and_build_zeroshot(tmp_path, arch, tag):
    fetched = tmp_path / "pretrained" / "model.safetensors"
    assert main(["fetch-pretrained", "--arch", arch, "--pretrained", tag, "--out", str(fetched)]) == 0
    zeroshot = tmp_path / "zeroshot" / "model.safetensors"
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\n")
    assert main(["zeroshot", "--pretrained", str(fetched), "--classnames", str(classes),
                 "--templates", "a photo of a {}.", "--device", "cpu", "--out", str(zeroshot)]) == 0
    return fetched, zeroshot


def test_the_openai_tag_resolves_to_the_quickgelu_architecture():
    assert faithful_arch("ViT-B-32", "openai") == "ViT-B-32-quickgelu"
    assert faithful_arch("ViT-B-32-quickgelu", "openai") == "ViT-B-32-quickgelu"
    assert faithful_arch("ViT-B-32", "laion2b_s34b_b79k") == "ViT-B-32"  # trained with nn.GELU


def test_openai_weights_are_fetched_and_reloaded_with_quickgelu(monkeypatch, tmp_path):
    local_tag(monkeypatch, tmp_path, "ViT-B-32-quickgelu", "openai")
    fetched, zeroshot = fetch_and_build_zeroshot(tmp_path, "ViT-B-32", "openai")
    assert header_metadata(fetched)["arch"] == "ViT-B-32-quickgelu"
    assert read_json(zeroshot.with_name("meta.json"))["arch"] == "ViT-B-32-quickgelu"
    for model in (create_clip("ViT-B-32-quickgelu", str(fetched)), load_classifier(zeroshot)):
        activations = {type(block.mlp.gelu) for block in model.visual.transformer.resblocks}
        assert activations == {QuickGELU}


def test_a_tags_own_preprocessing_reaches_every_later_stage(monkeypatch, tmp_path):
    arch = "clipmerge-tiny"
    assert preprocess_cfg(arch)["mean"] != [0.5, 0.5, 0.5]
    local_tag(monkeypatch, tmp_path, arch, "half", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
              interpolation="bilinear", resize_mode="squash")
    fetched, zeroshot = fetch_and_build_zeroshot(tmp_path, arch, "half")
    expected = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bilinear",
                "resize_mode": "squash"}
    for path in (fetched, zeroshot):
        recorded = checkpoint_preprocess(path)
        assert {k: recorded[k] for k in expected} == expected, path
    assert read_json(fetched.with_name("meta.json"))["hparams"]["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    reloaded = preprocess_cfg(arch, load_classifier(zeroshot))
    assert {k: reloaded[k] for k in expected} == expected
    normalize = eval_transform(reloaded).transforms[-1]
    assert list(normalize.mean) == [0.5, 0.5, 0.5]


def test_a_file_written_before_preprocess_was_recorded_falls_back_to_the_arch(tiny_clip_file, tmp_path):
    from clipmerge.weights.checkpoint import load_weights, save_weights

    old = tmp_path / "old.safetensors"
    save_weights(load_weights(tiny_clip_file), old, metadata={"format": "open_clip", "arch": "clipmerge-tiny"})
    assert checkpoint_preprocess(old) == preprocess_cfg("clipmerge-tiny")

