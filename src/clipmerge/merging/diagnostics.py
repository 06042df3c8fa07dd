"""Per-tensor merge diagnostics (Model Stock's cosine, angle, ratio t and the deltas' norms) and their
summary: what merge.json and periodic Model Stock's merge_history.json record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

# "parallel": SLERP's two vectors were (anti-)parallel, so it interpolated linearly (merging/slerp.py).
Guard = Literal["zero_delta", "negative_cos", "non_float", "parallel"]


@dataclass(frozen=True)
class TensorDiagnostics:
    """How one tensor was merged. ``cos`` is after guards; ``angle_deg`` is the mean pairwise angle
    before the negative-cos clamp; ``guard`` names the rule that changed the result, if any;
    ``norms`` are the L2 norms of the N deltas ``w_i - w0`` in input order (the square roots of the
    Gram matrix's diagonal), None where nothing was computed (non-float tensors)."""

    cos: float | None
    angle_deg: float | None
    t: float | None
    guard: Guard | None
    norms: tuple[float, ...] | None = None

    def to_json(self) -> dict:
        out = asdict(self)
        out["norms"] = None if self.norms is None else list(self.norms)
        return out


def summarize(diagnostics: Mapping[str, TensorDiagnostics]) -> dict:
    """Summary of per-tensor diagnostics: range of t, mean angle, and the guarded tensors by guard."""
    merged = [d for d in diagnostics.values() if d.t is not None]
    guarded: dict[str, list[str]] = {}
    for key, d in diagnostics.items():
        if d.guard is not None:
            guarded.setdefault(d.guard, []).append(key)
    ts = [d.t for d in merged]
    return {
        "n_tensors": len(diagnostics),
        "n_merged": len(merged),
        "t_mean": sum(ts) / len(ts) if ts else None,
        "t_min": min(ts, default=None),
        "t_max": max(ts, default=None),
        "angle_deg_mean": sum(d.angle_deg for d in merged) / len(merged) if merged else None,
        "guarded": guarded,
    }
