"""open_clip CLIPs: architectures (the shipped tiny config included), weights, preprocessing.

A full CLIP (both towers) is what the pretrained stage stores: ``pretrained/model.safetensors`` with
its meta.json; the classifier (classifier.py) keeps only the image tower.

Two things a pretrained tag decides are not in an architecture's config, so they are resolved once,
when the weights are fetched, and recorded in every checkpoint's safetensors header that descends
from them, so every later stage rebuilds the same network and the same transform:
- the activation (:func:`faithful_arch`): OpenAI's weights were trained with QuickGELU, and open_clip
  builds ``ViT-B-32`` with nn.GELU even for the ``openai`` tag (it only warns; open_clip issue #441);
  the recorded ``arch`` is then ``ViT-B-32-quickgelu``;
- the preprocessing (header ``preprocess``: size, mean/std, interpolation, resize mode): many tags set
  their own (the LAION ViT-L-14 tags use mean/std 0.5), which rebuilding from the arch would lose.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import open_clip
from torch import nn

from clipmerge import layout
from clipmerge.errors import ClipmergeError
from clipmerge.weights.checkpoint import header_metadata, load_strict, load_weights, save_weights

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
TINY_ARCH = "clipmerge-tiny"
PREPROCESS_KEY = "preprocess"  # safetensors header key: the JSON preprocess config of the weights
QUICKGELU = "-quickgelu"

open_clip.add_model_config(MODEL_CONFIG_DIR)


def quiet_create(arch: str, pretrained: str | None = None) -> open_clip.CLIP:
    """``open_clip.create_model`` without its "initialized randomly" warning (intended here)."""
    if arch not in open_clip.list_models():
        raise ClipmergeError(f"unknown open_clip architecture {arch!r} (see open_clip.list_models())")
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():  # the QuickGELU mismatch warning: faithful_arch resolves it
            warnings.filterwarnings("ignore", message="QuickGELU mismatch")
            return open_clip.create_model(arch, pretrained=pretrained)
    finally:
        logger.setLevel(level)


def faithful_arch(arch: str, pretrained: str) -> str:
    """The architecture whose activation matches the one ``pretrained`` (an open_clip tag) was trained
    with: ``ViT-B-32`` + ``openai`` -> ``ViT-B-32-quickgelu``. Every mismatched tag of open_clip 3.3 has
    such a variant; without one (or for a local file, which says nothing) ``arch`` is kept as given."""
    tag = open_clip.get_pretrained_cfg(arch, pretrained)
    config = open_clip.get_model_config(arch) or {}
    if not tag or tag.get("quick_gelu", False) == config.get("quick_gelu", False):
        return arch
    variant = arch + QUICKGELU if tag.get("quick_gelu") else arch.removesuffix(QUICKGELU)
    if variant in open_clip.list_models() and open_clip.get_pretrained_cfg(variant, pretrained):
        return variant
    logging.getLogger(__name__).warning("%s/%s: tag quick_gelu=%s differs from the architecture's and no "
                                        "variant exists; keeping %s", arch, pretrained, tag.get("quick_gelu"), arch)
    return arch


def create_clip(arch: str, weights: str | None = None) -> open_clip.CLIP:
    """A full CLIP (both towers). ``weights``: None (random init), a clipmerge/open_clip safetensors
    file, or an open_clip pretrained tag (downloads; only the local ``fetch_pretrained`` rule uses it)."""
    if weights is None:
        return quiet_create(arch)
    if Path(weights).exists():
        model = quiet_create(arch)
        state = load_weights(weights) if str(weights).endswith(".safetensors") else None
        if state is None:  # open_clip's own .pt/.bin checkpoints, loaded with weights_only=True
            try:
                open_clip.load_checkpoint(model, weights, weights_only=True)
            except Exception as e:  # refused pickled code, garbage, or another architecture's tensors
                lines = [line for line in str(e).splitlines() if line.strip()] or [repr(e)]
                reason = next((line for line in lines if "GLOBAL" in line), lines[0])
                raise ClipmergeError(
                    f"{weights}: not loadable as a {arch} checkpoint with torch.load(weights_only=True), "
                    f"which never runs pickled code ({type(e).__name__}: {reason[:300]})"
                ) from e
        else:
            load_strict(model, state, weights)
            recorded = recorded_preprocess(weights)
            if recorded is not None:
                open_clip.set_model_preprocess_cfg(model, recorded)
        return model
    if "/" in weights or weights.endswith((".safetensors", ".pt", ".bin")):
        raise ClipmergeError(f"pretrained weights {weights!r}: file not found")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if weights not in tags:
        raise ClipmergeError(f"{weights!r} is neither a file nor a pretrained tag of {arch} ({', '.join(tags)})")
    return quiet_create(arch, pretrained=weights)


def save_clip(model: open_clip.CLIP, out, arch: str, pretrained: str, hparams: dict | None = None) -> None:
    """Write a full CLIP state dict (its preprocess config in the header) and its meta.json (model id
    ``pretrained``; ``hparams.preprocess`` repeats the config for MLflow and people)."""
    header = {"format": "open_clip", "arch": arch, **preprocess_header(model)}
    save_weights(model.state_dict(), out, metadata=header)
    hparams = {**(hparams or {}), "preprocess": preprocess_cfg(arch, model)}
    layout.write_meta(out, layout.model_meta_record(layout.PRETRAINED, layout.PRETRAINED, arch, pretrained,
                                                    hparams=hparams))


def embed_dim_of(arch: str) -> int:
    return open_clip.get_model_config(arch)["embed_dim"]


def preprocess_cfg(arch: str, model: nn.Module | None = None) -> dict:
    """open_clip's preprocessing config (size, mean, std, interpolation, resize mode) of ``model`` (a CLIP
    or a classifier: what its weights recorded), or of the architecture's defaults when no model is given
    (building a ViT-B/32 just for this costs seconds). JSON-normalised: tuples become lists."""
    cfg = open_clip.get_model_preprocess_cfg(model if model is not None else quiet_create(arch))
    return json.loads(json.dumps(cfg, sort_keys=True))


def preprocess_header(model: nn.Module) -> dict[str, str]:
    """The safetensors header entry recording ``model``'s preprocess config."""
    return {PREPROCESS_KEY: json.dumps(open_clip.get_model_preprocess_cfg(model), sort_keys=True)}


def recorded_preprocess(path) -> dict | None:
    """The preprocess config a checkpoint's header records (None for a file written before it did)."""
    value = header_metadata(path).get(PREPROCESS_KEY)
    return None if value is None else json.loads(value)


def checkpoint_preprocess(path) -> dict:
    """The preprocess config the weights in ``path`` use: the recorded one, else its arch's defaults."""
    recorded = recorded_preprocess(path)
    return recorded if recorded is not None else preprocess_cfg(header_metadata(path)["arch"])


def eval_transform(cfg: dict):
    """open_clip's evaluation transform for a preprocess config: resize + centre crop + mean/std."""
    return open_clip.image_transform(
        cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
        resize_mode=cfg["resize_mode"], interpolation=cfg["interpolation"],
    )
