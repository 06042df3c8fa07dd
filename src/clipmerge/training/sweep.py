"""Hyper-parameter sweeps: fine-tunes that differ by recipe, the ingredients model-soups' soups were made of.

A sweep (config ``sweep``) is either explicit variants (a list of recipe overrides) or a seeded random
search over a space. Variant k is model ``finetune_hp<k>``, trained from the zero-shot model like a seed,
with the ``finetune`` section's recipe and its own overrides.

The draw rule: each value of a random variant comes from one number u in [0, 1) that depends only on
(sweep seed, k, key) — the first 56 bits of sha256 of those three — so adding variants keeps the earlier
ones, adding a key keeps the other keys' values, and every machine draws the same variants (no random
module, no numpy; integer and float arithmetic only, floats rounded to 4 significant digits).

Pure Python: the workflow draws the variants when it builds the DAG.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields

from clipmerge.errors import ClipmergeError
from clipmerge.training.recipe import Recipe

# model-soups' random search over CLIP ViT-B/32 fine-tunes (its hparam_info.json, 71 fine-tunes;
# METHODS-BRIEF §3): the ranges observed in the file, rounded outward, and the share of its runs with
# mixup, label smoothing and RandAugment switched off (39/71, 39/71, 27/71) as p_zero.
MODEL_SOUPS_SPACE = {
    "lr": {"log_uniform": [1.0e-6, 1.0e-4]},
    "weight_decay": {"log_uniform": [8.0e-5, 0.55]},
    "epochs": {"int_uniform": [4, 16]},
    "label_smoothing": {"uniform": [0.0, 0.23], "p_zero": 0.55},
    "mixup_alpha": {"uniform": [0.0, 0.9], "p_zero": 0.55},
    # RandAugment rand-m<M>-n<N>: N ops (0 = none) at magnitude M. The file's M (1-20) is timm's, whose
    # nominal maximum is 10 (M > 10 extrapolates); torchvision's bins 0-30 span timm's 0-10 and go no
    # further, so the default draws the whole torchvision range.
    "randaugment_ops": {"int_uniform": [0, 2], "p_zero": 0.38},
    "randaugment_magnitude": {"int_uniform": [0, 30]},
}
DISTRIBUTIONS = ("log_uniform", "uniform", "int_uniform", "choice")
SIGNIFICANT_DIGITS = 4  # a drawn float is rounded so it reads well in the table and MLflow, and round-trips a flag
# Recipe key -> int, float or bool (the dataclass's annotations, strings under postponed evaluation).
_KINDS = {f.name: f.type.split(" |")[0] for f in fields(Recipe)}
# The training seed is not a recipe key, but an explicit variant may set it (default: its index).
SEED_KEY = "seed"


@dataclass(frozen=True)
class Dimension:
    """One searched hyper-parameter: a distribution and, with probability ``p_zero``, the value 0 (off)."""

    key: str
    dist: str
    values: tuple  # [low, high] for the ranges, the options for choice
    p_zero: float = 0.0

    def draw(self, u_gate: float, u: float):
        if u_gate < self.p_zero:
            return 0 if _KINDS[self.key] == "int" else 0.0
        if self.dist == "choice":
            return self.values[min(int(u * len(self.values)), len(self.values) - 1)]
        low, high = self.values
        if self.dist == "int_uniform":
            return min(low + int(u * (high - low + 1)), high)
        value = low * (high / low) ** u if self.dist == "log_uniform" else low + u * (high - low)
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def parse_space(space: dict, where: str = "sweep.space") -> dict[str, Dimension]:
    """The searched dimensions of a space, checked: a recipe key, one distribution, ordered bounds,
    positive log-uniform bounds, integer bounds for integer keys.

    Raises:
        ClipmergeError: naming the key (``sweep.space.<key>``) and what is wrong.
    """
    if not space:
        raise ClipmergeError(f"{where}: empty; give at least one hyper-parameter to search")
    return {key: _dimension(key, spec, f"{where}.{key}") for key, spec in sorted(space.items())}


def _dimension(key: str, spec: dict, where: str) -> Dimension:
    _check_key(key, where)
    dists = [d for d in DISTRIBUTIONS if d in spec]
    unknown = set(spec) - {*DISTRIBUTIONS, "p_zero"}
    if len(dists) != 1 or unknown:
        raise ClipmergeError(f"{where}: give exactly one of {', '.join(DISTRIBUTIONS)} (and optionally p_zero), "
                             f"got {sorted(spec)}")
    dist, values = dists[0], tuple(spec[dists[0]])
    p_zero = spec.get("p_zero", 0.0)
    if not 0 <= p_zero <= 1:
        raise ClipmergeError(f"{where}.p_zero: a probability in [0, 1], got {p_zero!r}")
    kind = _KINDS[key]
    if dist == "choice":
        if not values or not all(_of_kind(v, kind) for v in values):
            raise ClipmergeError(f"{where}.choice: {key} takes {kind} values, got {list(values)}")
        return Dimension(key, dist, values, p_zero)
    if kind == "bool":
        raise ClipmergeError(f"{where}: {key} is a switch; use choice: [false, true]")
    if len(values) != 2 or not all(_of_kind(v, "float") for v in values):
        raise ClipmergeError(f"{where}.{dist}: expected [low, high], got {list(values)}")
    low, high = values
    if low > high:
        raise ClipmergeError(f"{where}.{dist}: low {low} > high {high} (bounds are [low, high])")
    if dist == "log_uniform" and low <= 0:
        raise ClipmergeError(f"{where}.log_uniform: bounds must be positive, got [{low}, {high}]")
    if (kind == "int") != (dist == "int_uniform"):
        use = "int_uniform or choice" if kind == "int" else "uniform, log_uniform or choice"
        raise ClipmergeError(f"{where}: {key} takes {kind} values; use {use}, not {dist}")
    if kind == "int" and not all(_of_kind(v, "int") for v in values):
        raise ClipmergeError(f"{where}.int_uniform: {key} is an integer hyper-parameter, got bounds {list(values)}")
    return Dimension(key, dist, values, p_zero)


def _check_key(key: str, where: str) -> None:
    if key not in _KINDS:
        raise ClipmergeError(f"{where}: {key!r} is not a fine-tuning hyper-parameter "
                             f"(one of {', '.join(sorted(_KINDS))})")


def _of_kind(value, kind: str) -> bool:
    if isinstance(value, bool):
        return kind == "bool"
    return isinstance(value, int) if kind == "int" else isinstance(value, int | float) and kind == "float"


def unit(seed: int, index: int, key: str, stream: str) -> float:
    """A number in [0, 1) fixed by (sweep seed, variant index, key, stream): sha256's first 56 bits."""
    digest = hashlib.sha256(f"clipmerge-sweep/{seed}/{index}/{key}/{stream}".encode()).digest()
    return int.from_bytes(digest[:7], "big") / 2**56


def draw(space: dict[str, Dimension], seed: int, index: int) -> dict:
    """Variant ``index`` of the random search ``seed`` over ``space``: {key: value}."""
    return {key: dim.draw(unit(seed, index, key, "gate"), unit(seed, index, key, "value"))
            for key, dim in space.items()}


def variants(sweep: dict) -> list[dict]:
    """The recipe overrides of every variant of a ``sweep`` config section, in index order: the explicit
    list as given, or ``variants`` draws from ``space`` (default :data:`MODEL_SOUPS_SPACE`) and ``seed``.

    Raises:
        ClipmergeError: a bad space or an explicit variant with a key that is no hyper-parameter.
    """
    spec = sweep["variants"]
    if isinstance(spec, list):
        if given := [k for k in ("space", "seed") if k in sweep]:
            raise ClipmergeError(f"sweep.{given[0]}: a random search's (variants: <number>); explicit variants "
                                 "(a list) set their values, and each its own seed, themselves")
        for k, overrides in enumerate(spec):
            for key in overrides:
                if key != SEED_KEY:
                    _check_key(key, f"sweep.variants[{k}]")
        return [dict(overrides) for overrides in spec]
    space = parse_space(sweep.get("space", MODEL_SOUPS_SPACE))
    return [draw(space, sweep.get("seed", 0), k) for k in range(spec)]


def check_recipe(recipe: dict, where: str) -> None:
    """A variant's full recipe is a valid :class:`Recipe` (e.g. label smoothing < 1)."""
    try:
        Recipe(**{k: v for k, v in recipe.items() if k in _KINDS})
    except ClipmergeError as e:
        raise ClipmergeError(f"{where}: {e}") from None
