"""import-model: fine-tunes made elsewhere, in their projects' key layouts, become classifier
checkpoints of the study; bad files exit 2 and write nothing."""

import copy
import json

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from clipmerge.cli import main
from clipmerge.files import read_json
from clipmerge.models.classifier import classifier_from_clip, load_classifier, save_classifier
from clipmerge.models.clip import TINY_ARCH, create_clip, save_clip
from clipmerge.weights.checkpoint import header_metadata, load_weights
from fixtures import external_checkpoints as ext

NUM_CLASSES = 5


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A tiny CLIP, its zero-shot-like classifier (the template) and a 'fine-tuned' CLIP + head."""
    root = tmp_path_factory.mktemp("import")
    torch.manual_seed(0)
    pretrained = create_clip(TINY_ARCH)
    save_clip(pretrained, root / "pretrained.safetensors", TINY_ARCH, "random")
    template = root / "zeroshot" / "model.safetensors"
    save_classifier(classifier_from_clip(pretrained, torch.randn(NUM_CLASSES, 64)), template, TINY_ARCH)
    (template.parent / "meta.json").write_text(json.dumps({"model": "zeroshot", "arch": TINY_ARCH,
                                                           "pretrained": "random"}))
    finetuned = create_clip(TINY_ARCH)  # other weights: a "fine-tune"
    head = (torch.randn(NUM_CLASSES, 64), torch.randn(NUM_CLASSES))
    return {"root": root, "template": template, "clip": ext.clip_state(finetuned), "head": head}


def run_import(study, source, out, *extra):
    return main(["import-model", "--source", str(source), "--template", str(study["template"]),
                 "--model-id", "imported_m", "--out", str(out), *map(str, extra)])


def assert_same_tower(out, clip_state, head=None, template=None):
    converted = load_weights(out)
    for key, value in clip_state.items():
        if key.startswith("visual."):
            assert torch.equal(converted[key], value), key
    expected_head = head if head is not None else (load_weights(template)["head.weight"],
                                                   load_weights(template)["head.bias"])
    assert torch.equal(converted["head.weight"], expected_head[0])
    assert torch.equal(converted["head.bias"], expected_head[1])


@pytest.mark.parametrize("fmt", ["model_soups", "wise_ft"])
def test_wrapper_checkpoints_keep_their_head(study, tmp_path, fmt):
    state = getattr(ext, f"{fmt}_state")(study["clip"], *study["head"])
    torch.save(state, tmp_path / "model_3.pt")
    out = tmp_path / "out" / "model.safetensors"
    hparams = {"aug": None, "wd": 0.1, "lr": 3e-5, "mix": 0.2, "smoothing": 0.1, "epochs": 10}
    assert run_import(study, tmp_path / "model_3.pt", out, "--hparams-json", json.dumps(hparams)) == 0
    assert_same_tower(out, study["clip"], study["head"])
    assert header_metadata(out) == header_metadata(study["template"])  # arch, num_classes, preprocess
    meta = read_json(out.with_name("meta.json"))
    assert meta["model"] == "imported_m" and meta["method"] == "imported" and meta["arch"] == TINY_ARCH
    assert meta["hparams"]["format"] == fmt and meta["hparams"]["head"] == "checkpoint"
    assert len(meta["hparams"]["sha256"]) == 64 and meta["hparams"]["source"].endswith("model_3.pt")
    assert {k: meta["hparams"][k] for k in ("lr", "weight_decay", "epochs", "mixup_alpha", "label_smoothing",
                                            "augment")} == {"lr": 3e-5, "weight_decay": 0.1, "epochs": 10,
                                                            "mixup_alpha": 0.2, "label_smoothing": 0.1,
                                                            "augment": "none"}
    load_classifier(out)  # rebuilds


@pytest.mark.parametrize("source", ["open_clip_train", "open_clip_pt", "open_clip_ddp_pt", "open_clip_safetensors"])
def test_clips_without_a_head_get_the_zero_shot_head(study, tmp_path, source):
    path = tmp_path / ("ckpt.safetensors" if source.endswith("safetensors") else "ckpt.pt")
    if source == "open_clip_train":
        torch.save(ext.open_clip_train_checkpoint(study["clip"]), path)
    elif source == "open_clip_pt":
        torch.save(study["clip"], path)
    elif source == "open_clip_ddp_pt":  # a state dict saved from a DDP wrapper: every key under module.
        torch.save({"module." + k: v for k, v in study["clip"].items()}, path)
    else:
        save_file(study["clip"], path)
    out = tmp_path / "out" / "model.safetensors"
    assert run_import(study, path, out) == 0
    assert_same_tower(out, study["clip"], template=study["template"])
    hparams = read_json(out.with_name("meta.json"))["hparams"]
    assert hparams["head"] == "zeroshot"
    assert hparams["format"] == ("open_clip_train" if source == "open_clip_train" else "open_clip")


def test_fp16_weights_are_cast_to_the_templates_dtype(study, tmp_path):
    state = {k: v.half() for k, v in ext.model_soups_state(study["clip"], *study["head"]).items()}
    torch.save(state, tmp_path / "half.pt")
    out = tmp_path / "out" / "model.safetensors"
    assert run_import(study, tmp_path / "half.pt", out) == 0
    assert {v.dtype for v in load_weights(out).values()} == {torch.float32}
    assert read_json(out.with_name("meta.json"))["hparams"]["source_dtype"] == "float16"


def test_the_exact_vit_b32_model_soups_layout(tmp_path):
    """An open_clip ViT-B-32 state dict renamed to model-soups' keys: every key is placed or dropped."""
    torch.manual_seed(0)
    arch = "ViT-B-32-quickgelu"
    clip = open_clip.create_model(arch)
    template = tmp_path / "zeroshot" / "model.safetensors"
    save_classifier(classifier_from_clip(clip, torch.randn(1000, 512)), template, arch)
    (template.parent / "meta.json").write_text(json.dumps({"model": "zeroshot", "arch": arch, "pretrained": "x"}))
    state = ext.model_soups_state(ext.clip_state(clip), torch.randn(1000, 512), torch.randn(1000))
    dropped = sorted(k for k in state if not k.startswith(("model.visual.", "classification_head.")))
    assert dropped == ["model.ln_final.bias", "model.ln_final.weight", "model.logit_scale",
                       "model.positional_embedding", "model.text_projection", "model.token_embedding.weight"]
    torch.save(state, tmp_path / "model_0.pt")
    out = tmp_path / "out" / "model.safetensors"
    study = {"template": template}
    assert run_import(study, tmp_path / "model_0.pt", out) == 0
    converted = load_weights(out)
    assert len(converted) == len(state) - len(dropped)
    assert torch.equal(converted["visual.transformer.resblocks.11.mlp.c_proj.weight"],
                       state["model.visual.transformer.resblocks.11.mlp.c_proj.weight"])


class Payload:  # a pickled object: what torch.load(weights_only=True) must refuse
    pass


def narrow_state():
    config = copy.deepcopy(open_clip.get_model_config(TINY_ARCH))
    config["vision_cfg"].update(width=32, head_width=16)
    model = open_clip.model.CLIP(**{k: v for k, v in config.items() if k != "quick_gelu"})
    return ext.clip_state(model)


BAD = {
    "truncated": (lambda s, p: p.write_bytes(ext_bytes(s)[:5000]), "not a readable torch checkpoint"),
    "pickled": (lambda s, p: torch.save({"state_dict": Payload()}, p), "refused: it holds pickled objects"),
    "wrong_arch": (lambda s, p: torch.save(ext.model_soups_state(narrow_state(), *s["head"]), p),
                   "has shape (32,)"),
    "no_head": (lambda s, p: torch.save({k: v for k, v in ext.model_soups_state(s["clip"], *s["head"]).items()
                                         if not k.startswith("classification_head.")}, p),
                "without its classification head ('classification_head.weight' missing)"),
    "unknown_key": (lambda s, p: torch.save({**ext.model_soups_state(s["clip"], *s["head"]),
                                             "model.extra.weight": torch.zeros(1)}, p),
                    "key 'model.extra.weight' fits no known format"),
    "foreign": (lambda s, p: torch.save({"encoder.layer.0.weight": torch.zeros(1)}, p),
                "key 'encoder.layer.0.weight' fits no known format"),
}


def ext_bytes(study) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(ext.model_soups_state(study["clip"], *study["head"]), buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_external_files_exit_2_and_write_nothing(study, tmp_path, capsys, case):
    write, message = BAD[case]
    source = tmp_path / "bad.pt"
    write(study, source)
    out = tmp_path / "out" / "model.safetensors"
    assert run_import(study, source, out) == 2
    err = capsys.readouterr().err
    assert message in err and str(source) in err
    assert not out.exists() and not out.with_name("meta.json").exists()


def test_a_required_head_refuses_a_bare_clip(study, tmp_path, capsys):
    torch.save(study["clip"], tmp_path / "clip.pt")
    out = tmp_path / "out" / "model.safetensors"
    assert run_import(study, tmp_path / "clip.pt", out, "--require-head") == 2
    assert "has no classification head, and one is required" in capsys.readouterr().err
    assert not out.exists()
