"""Fine-tunes made elsewhere, converted into this project's classifier checkpoint (rule import_model).

The format is detected from the keys (never from the file name):

- ``model_soups``: model-soups' ``torch.save(model.module.state_dict())`` of its ``ModelWrapper``
  (utils.py) around OpenAI CLIP loaded with ``clip.load(..., jit=False)``: the image tower under
  ``model.visual.*``; what deleting ``model.transformer`` leaves of the text tower
  (``model.{positional_embedding,text_projection,logit_scale,token_embedding.weight,ln_final.*}``),
  dropped here; the head ``classification_head.{weight,bias}``, applied as ``head(f / |f|)``
  (``get_model_from_sd`` builds the wrapper with ``normalize=True``) — this project's convention.
- ``wise_ft``: wise-ft's ``ImageClassifier`` state dict (src/models/modeling.py): the same under
  ``image_encoder.model.*``, head ``classification_head.*`` (a ``ClassificationHead(normalize=True)``).
  wise-ft itself pickles the whole module (``utils.torch_save``); only its ``state_dict()`` saved with
  ``torch.save`` loads here, because nothing here unpickles objects.
- ``open_clip_train``: ``{"epoch", "name", "state_dict", ...}`` of open_clip's trainer, keys prefixed
  ``module.`` after DDP: a whole CLIP, no classification head.
- ``open_clip``: a plain open_clip CLIP state dict (``visual.*`` + the text tower), as ``.pt`` or
  ``.safetensors``.
- ``clipmerge``: this project's own classifier layout (``visual.*``, ``head.*``).

A CLIP without a classification head (open_clip_train, open_clip) gets the study's zero-shot head,
so the model is that CLIP's image tower with the zero-shot classifier. Tensors are cast to the
template's dtype (model-soups' ``get_model_from_sd`` casts to float as well).

Every file is read with ``torch.load(weights_only=True)`` (or safetensors): a pickled object is
refused. The converted model must match the study's zero-shot model (the template) tensor for
tensor — names and shapes — so a checkpoint of another architecture is refused before any merge.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from clipmerge.errors import ClipmergeError
from clipmerge.weights.checkpoint import header_metadata, load_weights, save_weights
from clipmerge.weights.streaming import assert_finite

HEAD = ("head.weight", "head.bias")
# OpenAI CLIP's text-tower tensors that outlive ModelWrapper's `del model.transformer`.
TEXT_LEFTOVERS = ("positional_embedding", "text_projection", "logit_scale", "token_embedding.weight",
                  "ln_final.weight", "ln_final.bias")


@dataclass(frozen=True)
class Format:
    """A checkpoint layout: the key prefix that identifies it, where its image tower lives, its head's
    keys, the keys it drops."""

    name: str
    signature: str  # a key prefix only this format has (formats are tried in order)
    visual: str  # prefix of the image tower's keys ("<prefix>visual.conv1.weight")
    head: tuple[str, str] | None  # (weight, bias) keys, None: the format has no classification head
    dropped: tuple[str, ...]  # exact keys that are read and discarded
    dropped_prefixes: tuple[str, ...] = ()

    def owns(self, key: str) -> bool:
        return (key.startswith(self.visual + "visual.") or key in (self.head or ()) or key in self.dropped
                or key.startswith(self.dropped_prefixes))


FORMATS = (
    Format("model_soups", "model.visual.", "model.", ("classification_head.weight", "classification_head.bias"),
           tuple("model." + k for k in TEXT_LEFTOVERS)),
    Format("wise_ft", "image_encoder.model.visual.", "image_encoder.model.",
           ("classification_head.weight", "classification_head.bias"),
           tuple("image_encoder.model." + k for k in TEXT_LEFTOVERS)),
    Format("clipmerge", "head.weight", "", HEAD, ()),
    # Last: any image tower without a head.
    Format("open_clip", "visual.", "", None, (*TEXT_LEFTOVERS, "attn_mask"), ("transformer.", "text.")),
)


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 24):
            h.update(block)
    return h.hexdigest()


def read_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], bool]:
    """The tensors of an external checkpoint (``module.`` prefixes removed), and whether it was an
    open_clip_train dict (``state_dict`` inside). Refuses pickled objects, truncation and non-tensor
    entries."""
    path = Path(path)
    if not path.is_file():
        raise ClipmergeError(f"{path}: external checkpoint not found")
    if path.suffix == ".safetensors":
        return load_weights(path, check_finite=False), False
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ...
        if type(e).__name__ != "UnpicklingError":
            raise ClipmergeError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {str(e)[:300]}); "
                                 "truncated download?") from e
        lines = [line for line in str(e).splitlines() if line.strip()]
        reason = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else repr(e))
        raise ClipmergeError(f"{path}: refused: it holds pickled objects, and it is only read with "
                             f"torch.load(weights_only=True), which never runs pickled code ({reason[:300]})") from e
    if not isinstance(loaded, Mapping):
        raise ClipmergeError(f"{path}: holds a {type(loaded).__name__}, not a state dict")
    trainer = "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping)
    state = loaded["state_dict"] if trainer else loaded
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP/DataParallel wrapper
        state = {k.removeprefix("module."): v for k, v in state.items()}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ClipmergeError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
    return dict(state), trainer


def detect(path, state: Mapping[str, torch.Tensor]) -> Format:
    """The format whose signature key the checkpoint has; every key must belong to it."""
    for fmt in FORMATS:
        if any(key.startswith(fmt.signature) for key in state):
            stray = next((key for key in sorted(state) if not fmt.owns(key)), None)
            if stray is not None:
                raise ClipmergeError(f"{path}: looks like a {fmt.name} checkpoint, but key {stray!r} fits no "
                                     "known format")
            return fmt
    first = next(iter(sorted(state)), None)
    raise ClipmergeError(f"{path}: key {first!r} fits no known format (model-soups, wise-ft, open_clip_train, "
                         "open_clip, clipmerge)" if first else f"{path}: holds no tensors")


def convert(path, template, *, head_required: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """The classifier state dict (``visual.*``, ``head.*``) of external checkpoint ``path``, checked
    against the ``template`` classifier checkpoint (names, shapes, finite values), and what was found:
    ``{"format", "head": "checkpoint" | "zeroshot", "source_dtype"}``."""
    state, trainer = read_state(path)
    fmt = detect(path, state)
    name = "open_clip_train" if trainer else fmt.name
    reference = load_weights(template)
    converted = {"visual." + k.removeprefix(fmt.visual + "visual."): v
                 for k, v in state.items() if k.startswith(fmt.visual + "visual.")}
    if fmt.head is not None:
        missing = [k for k in fmt.head if k not in state]
        if missing:
            raise ClipmergeError(f"{path}: a {name} checkpoint without its classification head ({missing[0]!r} "
                                 "missing)")
        converted.update(zip(HEAD, (state[k] for k in fmt.head), strict=True))
    elif head_required:
        raise ClipmergeError(f"{path}: a {name} checkpoint has no classification head, and one is required")
    else:
        converted.update({k: reference[k] for k in HEAD})
    expected = sorted(reference)
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    if missing or unexpected:
        raise ClipmergeError(f"{path}: does not match the study's architecture {header_metadata(template)['arch']} "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for k, v in converted.items() if k not in HEAD})
    for key in expected:
        value, ref = converted[key], reference[key]
        if tuple(value.shape) != tuple(ref.shape):
            raise ClipmergeError(f"{path}: tensor {key!r} has shape {tuple(value.shape)}, the study's architecture "
                                 f"expects {tuple(ref.shape)} (a checkpoint of another architecture?)")
        converted[key] = value.to(ref.dtype)
        assert_finite(converted[key], key, path)
    found = {"format": name, "head": "checkpoint" if fmt.head else "zeroshot", "source_dtype": ",".join(dtypes)}
    return {k: converted[k] for k in expected}, found


def import_checkpoint(path, template, out, *, head_required: bool = False) -> dict:
    """Convert ``path`` and write it as a classifier checkpoint with the template's header (arch,
    num_classes, preprocess); returns the provenance to record (source file, sha256, format, ...)."""
    state, found = convert(path, template, head_required=head_required)
    save_weights(state, out, metadata=header_metadata(template))
    return {"source": str(Path(path).resolve()), "sha256": sha256_of(path), **found}


# model-soups' hparam_info.json keys -> this project's recipe names (the rest are kept as they are).
MODEL_SOUPS_HPARAMS = {"lr": "lr", "wd": "weight_decay", "epochs": "epochs", "mix": "mixup_alpha",
                       "smoothing": "label_smoothing", "aug": "augment"}


def recipe_hparams(entry: Mapping) -> dict:
    """A model's hparam_info.json entry under this project's names (``wd`` -> ``weight_decay``, ...);
    ``aug`` (timm's ``rand-mM-nN`` or null) becomes ``augment`` ("none" when null)."""
    named = {MODEL_SOUPS_HPARAMS.get(k, k): v for k, v in entry.items()}
    if "augment" in named and named["augment"] is None:
        named["augment"] = "none"
    return named
