"""Model Stock's geometry by layer, as the paper plots it: each tensor of a classifier checkpoint placed
at a depth and given a kind, and the per-tensor diagnostics (angle between the fine-tunes' deltas, t,
the deltas' norms) averaged per (depth, kind). Torch-free: it reads merge.json / merge_history.json.

Keys are open_clip's ViT image tower plus the classifier head (clipmerge.models.classifier):

=========================================================  ============  =====================
key                                                        kind          depth
=========================================================  ============  =====================
``visual.conv1.*``, ``visual.class_embedding``,            embedding     -1 (before block 0)
``visual.positional_embedding``
``visual.ln_pre.*``                                        layernorm     -1
``visual.transformer.resblocks.<i>.attn.*``                attention     i
``visual.transformer.resblocks.<i>.mlp.*``                 mlp           i
``visual.transformer.resblocks.<i>.ln_*`` (and any         layernorm     i
``ln*`` module inside a block, e.g. ``mlp.ln``)
``visual.ln_post.*``                                       layernorm     L (after the last block)
``visual.proj``                                            projection    L
``head.weight``, ``head.bias``                             head          L
anything else inside block i (e.g. LayerScale ``ls_1``)    other         i
anything else                                              other         None (no depth)
=========================================================  ============  =====================

L is the number of blocks (the largest block index + 1). Choices:

- ``visual.proj`` (the image tower's output projection, trained with CLIP) is its own kind,
  ``projection``, not part of the head (the linear classifier built from the text tower).
- A fused QKV ``in_proj_weight`` is one attention tensor, as Model Stock gives it one angle.
- Unknown keys are kept, never dropped or refused, as kind ``other``: at their block's depth when
  they sit in a block, else with no depth (``None``): a plot against depth leaves those out and
  counts them, and the plot's JSON lists them. A non-ViT tower (e.g. open_clip's ModifiedResNet) is
  thus all ``other``: its geometry plot is empty but the workflow still finishes.
- Group means are plain means over the group's tensors (each tensor counts once, whatever its size),
  over the tensors that have the value (a non-float tensor has none). A tensor's delta norm is the
  mean of its N deltas' L2 norms.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from clipmerge.errors import ClipmergeError

KINDS = ("embedding", "attention", "mlp", "layernorm", "projection", "head", "other")
BEFORE = -1  # the depth of the patch/position embeddings and ln_pre
Depth = int | None

_BLOCK = re.compile(r"^visual\.transformer\.resblocks\.(\d+)\.(.+)$")
_EMBEDDINGS = ("visual.class_embedding", "visual.positional_embedding")


def block_count(keys: Iterable[str]) -> int:
    """L: the number of transformer blocks (largest ``resblocks.<i>`` index + 1; 0 without blocks)."""
    return 1 + max((int(m.group(1)) for k in keys if (m := _BLOCK.match(k))), default=-1)


def tensor_group(key: str, n_blocks: int) -> tuple[Depth, str]:
    """``(depth, kind)`` of one state-dict key of a classifier with ``n_blocks`` blocks (module docstring)."""
    if m := _BLOCK.match(key):
        depth, rest = int(m.group(1)), m.group(2)
        modules = rest.split(".")[:-1]  # the parameter's module path inside the block
        if any(part.startswith("ln") for part in modules):
            return depth, "layernorm"
        if modules and modules[0] == "attn":
            return depth, "attention"
        if modules and modules[0] == "mlp":
            return depth, "mlp"
        return depth, "other"
    if key.startswith("visual.conv1.") or key in _EMBEDDINGS:
        return BEFORE, "embedding"
    if key.startswith("visual.ln_pre."):
        return BEFORE, "layernorm"
    if key.startswith("visual.ln_post."):
        return n_blocks, "layernorm"
    if key == "visual.proj":
        return n_blocks, "projection"
    if key in ("head.weight", "head.bias"):
        return n_blocks, "head"
    return None, "other"


def group_keys(keys: Iterable[str]) -> dict[str, tuple[Depth, str]]:
    """``{key: (depth, kind)}`` for every key of one checkpoint (L is counted from the keys themselves)."""
    keys = list(keys)
    n_blocks = block_count(keys)
    return {key: tensor_group(key, n_blocks) for key in keys}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def aggregate(tensors: Mapping[str, Mapping], by: tuple[str, ...] = ("depth", "kind")) -> list[dict]:
    """Means of per-tensor diagnostics ``{key: {"angle_deg", "t", "norms", ...}}`` (merge.json's
    ``tensors``, or one merge of merge_history.json) per group of tensors.

    Args:
        by: what a group shares: ``("depth", "kind")``, ``("kind",)`` (every depth of a kind) or
            ``("depth",)`` (every kind at a depth).

    Returns:
        One row per group, ``{<by fields>, "n_tensors", "angle_deg_mean", "t_mean", "delta_norm_mean",
        "keys"}``, sorted by kind (``KINDS`` order) then depth (None last); a mean is None when no
        tensor of the group has that value (``norms`` absent or null, a non-float tensor's null angle
        and t).
    """
    if not by or not set(by) <= {"depth", "kind"}:
        raise ClipmergeError(f"aggregate: 'by' must name 'depth' and/or 'kind', got {by!r}")
    groups: dict[tuple, list[str]] = {}
    for key, (depth, kind) in group_keys(tensors).items():
        groups.setdefault((depth if "depth" in by else None, kind if "kind" in by else None), []).append(key)
    order = {kind: i for i, kind in enumerate(KINDS)}

    def position(group):
        depth, kind = group[0]
        return order.get(kind, -1), depth is None, depth or 0

    rows = []
    for (depth, kind), keys in sorted(groups.items(), key=position):
        entries = [tensors[k] for k in keys]
        norms = [sum(e["norms"]) / len(e["norms"]) for e in entries if e.get("norms")]
        fields = {"depth": depth, "kind": kind}
        rows.append({
            **{name: fields[name] for name in ("depth", "kind") if name in by},
            "n_tensors": len(keys),
            "angle_deg_mean": _mean([float(e["angle_deg"]) for e in entries if e.get("angle_deg") is not None]),
            "t_mean": _mean([float(e["t"]) for e in entries if e.get("t") is not None]),
            "delta_norm_mean": _mean(norms),
            "keys": keys,
        })
    return rows


def check_tensors(tensors, source) -> dict[str, dict]:
    """``tensors`` if it is a non-empty object of per-tensor diagnostics with ``t`` and ``angle_deg``."""
    if not isinstance(tensors, dict) or not tensors:
        raise ClipmergeError(f"{source}: 'tensors' must be a non-empty object of per-tensor diagnostics")
    for name, entry in tensors.items():
        if not isinstance(entry, dict) or "t" not in entry or "angle_deg" not in entry:
            raise ClipmergeError(f"{source}: tensor {name!r} needs 't' and 'angle_deg'")
    return tensors


def merge_steps(history, source) -> list[dict]:
    """The merges of periodic Model Stock's merge_history.json (a list of ``{"step", "epoch", "tensors",
    ...}``), checked, in the file's (training) order."""
    if not isinstance(history, list) or not history:
        raise ClipmergeError(f"{source}: expected a non-empty list of merges")
    for i, merge in enumerate(history):
        if not isinstance(merge, dict) or "step" not in merge:
            raise ClipmergeError(f"{source}: merge {i} needs 'step' and 'tensors'")
        check_tensors(merge.get("tensors"), f"{source}: merge {i} (step {merge['step']})")
    return history
