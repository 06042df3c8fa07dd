"""The PNG figures of a study, from its result files (matplotlib, Agg backend).

- ``id_vs_shifts.png``: ID vs average-shift top-1 of every model, as in the Model Soups / WiSE-FT
  figures; the WiSE-FT models are joined into a curve from the zero-shot model (alpha 0) to their
  fine-tune (alpha 1).
- ``wise_ft_curve.png``: ID and average-shift top-1 against alpha.
- ``model_stock_ratios.png``: Model Stock's per-tensor interpolation ratio t and cosine, in state-dict order.
- ``greedy_soup.png``: held-out accuracy at each greedy-soup step, accepted candidates marked.

Every requested plot is written: when the study has no results for it (e.g. no WiSE-FT), the PNG is a
placeholder that says so, so a workflow rule can always declare the four outputs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

from clipmerge import layout
from clipmerge.errors import ClipmergeError
from clipmerge.files import read_object

log = logging.getLogger(__name__)

PLOTS = ("id_vs_shifts", "wise_ft_curve", "model_stock_ratios", "greedy_soup")
ZEROSHOT = layout.ZEROSHOT
DPI = 120


def write_plots(names: list[str], accuracy: dict, metas: Mapping[str, dict], out_dir, id_set: str,
                merge_diagnostics=None, greedy_diagnostics=None) -> None:
    """Write ``<out_dir>/<name>.png`` for each of ``names``.

    Args:
        accuracy: ``{model: (ID top-1, average-shift top-1)}`` in row order.
        metas: every model's meta.json (the WiSE-FT curves follow their ingredients).
        merge_diagnostics, greedy_diagnostics: Model Stock's merge.json and greedy soup's greedy.json,
            when the study has them (else those plots are placeholders).
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on cluster nodes
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = wise_curves(accuracy, metas)
    missing = "not part of this study"
    builders = {"id_vs_shifts": lambda: plot_id_vs_shifts(accuracy, curves, id_set),
                "wise_ft_curve": lambda: plot_wise_ft_curve(accuracy, curves, id_set),
                "model_stock_ratios": lambda: plot_model_stock_ratios(Path(merge_diagnostics))
                if merge_diagnostics else f"no Model Stock merge diagnostics ({missing})",
                "greedy_soup": lambda: plot_greedy_soup(Path(greedy_diagnostics))
                if greedy_diagnostics else f"no greedy soup diagnostics ({missing})"}
    for name in names:
        fig = builders[name]()
        if isinstance(fig, str):
            log.warning("%s: %s; writing a placeholder", name, fig)
            fig = placeholder(name, fig)
        fig.savefig(out_dir / f"{name}.png", dpi=DPI)
        plt.close(fig)


def wise_curves(accuracy: dict, metas: Mapping[str, dict]) -> dict[str, list[tuple[float, str]]]:
    """WiSE-FT curves ``{fine-tune: [(alpha, model), ...]}`` sorted by alpha.

    The fine-tune is the WiSE-FT model's non-zero-shot ingredient in meta.json. The curve's ends are the
    zero-shot model (alpha 0) and the fine-tune (alpha 1) unless a WiSE-FT model already sits there.
    """
    curves: dict[str, list[tuple[float, str]]] = {}
    for model in accuracy:
        if (alpha := layout.alpha_of(model)) is None:
            continue
        if model not in metas:
            raise ClipmergeError(f"{layout.model_meta(model, '<study>')}: no meta.json given for {model!r}")
        meta = metas[model]
        ends = [m for m in meta.get("ingredients", []) if m != ZEROSHOT]
        if len(ends) != 1:
            raise ClipmergeError(f"meta.json of {model!r}: a WiSE-FT model needs exactly one "
                                 f"fine-tuned ingredient besides {ZEROSHOT!r}, found {ends}")
        curves.setdefault(ends[0], []).append((float(meta.get("hparams", {}).get("alpha", alpha)), model))
    for finetune, points in curves.items():
        alphas = {a for a, _ in points}
        for alpha, end in ((0.0, ZEROSHOT), (1.0, finetune)):
            if end in accuracy and alpha not in alphas:
                points.append((alpha, end))
        points.sort()
    return curves


def _group_colors(models) -> dict[str, str]:
    """One color per model family (zero-shot, fine-tunes, each merge method), stable across plots."""
    import matplotlib.pyplot as plt

    palette = plt.get_cmap("tab10").colors
    return {m: palette[layout.model_sort_key(m)[0] % len(palette)] for m in models}


def plot_id_vs_shifts(accuracy: dict, curves: dict, id_set: str):
    """Scatter of ID vs average-shift top-1, every model labelled, WiSE-FT curves drawn through."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5.5), layout="constrained")
    colors = _group_colors(accuracy)
    for finetune, points in curves.items():
        xs, ys = zip(*(accuracy[m] for _, m in points), strict=True)
        ax.plot(xs, ys, "-", color="0.6", zorder=1, label=f"WiSE-FT ({ZEROSHOT} to {finetune})")
    for model, (x, y) in accuracy.items():
        ax.scatter(x, y, color=colors[model], s=40, zorder=2, edgecolor="black", linewidth=0.5)
        ax.annotate(model, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(f"ID top-1 (%) on {id_set}")
    ax.set_ylabel("average top-1 (%) over the shifts")
    ax.set_title("In-distribution vs distribution-shift accuracy")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8, loc="lower right")
    return fig


def plot_wise_ft_curve(accuracy: dict, curves: dict, id_set: str):
    """ID and average-shift top-1 against the WiSE-FT mixing weight alpha."""
    import matplotlib.pyplot as plt

    if not curves:
        return "no WiSE-FT models in this study"
    fig, ax = plt.subplots(figsize=(6.5, 4.5), layout="constrained")
    for finetune, points in curves.items():
        alphas = [a for a, _ in points]
        suffix = f" ({finetune})" if len(curves) > 1 else ""
        ax.plot(alphas, [accuracy[m][0] for _, m in points], "o-", label=f"ID ({id_set}){suffix}")
        ax.plot(alphas, [accuracy[m][1] for _, m in points], "s--", label=f"avg of shifts{suffix}")
    ax.set_xlabel(f"alpha (0 = {ZEROSHOT}, 1 = fine-tuned)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("WiSE-FT: weight-space interpolation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def read_merge_tensors(path: Path) -> dict[str, dict]:
    """Per-tensor Model Stock diagnostics ``{name: {"cos", "angle_deg", "t", "guard"}}`` from merge.json,
    in state-dict order (clipmerge.merging.driver writes them so)."""
    tensors = read_object(path).get("tensors")
    if not isinstance(tensors, dict) or not tensors:
        raise ClipmergeError(f"{path}: 'tensors' must be a non-empty object of per-tensor diagnostics")
    for name, entry in tensors.items():
        if not isinstance(entry, dict) or "t" not in entry or "cos" not in entry:
            raise ClipmergeError(f"{path}: tensor {name!r} needs 't' and 'cos'")
    return tensors


def plot_model_stock_ratios(path: Path):
    """Per-tensor ratio t and cosine of Model Stock; tensors a guard changed are marked by guard."""
    import matplotlib.pyplot as plt

    tensors = read_merge_tensors(path)
    names = list(tensors)
    x = range(len(names))
    guards = sorted({e["guard"] for e in tensors.values() if e.get("guard")})
    fig, (ax_t, ax_cos) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True, layout="constrained")
    for ax, key, label in ((ax_t, "t", "ratio t"), (ax_cos, "cos", "cos(angle)")):
        # null: a guard skipped the computation (e.g. a non-float tensor copied from the anchor)
        values = [float("nan") if e[key] is None else float(e[key]) for e in tensors.values()]
        ax.plot(x, values, ".-", linewidth=0.8, markersize=4)
        for guard, color in zip(guards, ("red", "orange", "purple", "brown"), strict=False):
            hit = [i for i, e in enumerate(tensors.values())
                   if e.get("guard") == guard and not math.isnan(values[i])]
            if hit:  # NaN points (nothing computed) are counted in the title instead
                ax.scatter(hit, [values[i] for i in hit], color=color, zorder=3, s=18, label=f"guard: {guard}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    skipped = sum(e["t"] is None for e in tensors.values())
    ax_t.set_title(f"Model Stock per-tensor interpolation ({len(names)} tensors"
                   + (f", {skipped} without a ratio)" if skipped else ")"))
    if len(names) <= 40:  # names stay legible; beyond that the index is enough
        ax_cos.set_xticks(list(x), names, rotation=90, fontsize=6)
    ax_cos.set_xlabel("tensor (state-dict order)")
    return fig


def read_greedy_steps(path: Path) -> list[tuple[str, float, bool]]:
    """``(candidate, held-out accuracy, accepted)`` per step from greedy.json's ``steps``
    (clipmerge.merging.greedy_soup.GreedyStep)."""
    steps = read_object(path).get("steps")
    if not isinstance(steps, list) or not steps:
        raise ClipmergeError(f"{path}: 'steps' must be a non-empty list")
    for step in steps:
        if not isinstance(step, dict) or not {"candidate", "accuracy", "accepted"} <= step.keys():
            raise ClipmergeError(f"{path}: greedy step {step!r} needs 'candidate', 'accuracy' and 'accepted'")
    return [(str(s["candidate"]), float(s["accuracy"]), bool(s["accepted"])) for s in steps]


def plot_greedy_soup(path: Path):
    """Held-out accuracy of each greedy step (the soup with the candidate added), accepted ones filled."""
    import matplotlib.pyplot as plt

    steps = read_greedy_steps(path)
    x = range(1, len(steps) + 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(steps) + 2), 4.5), layout="constrained")
    soup, best = [], None
    for _, a, accepted in steps:
        best = a if accepted else best
        soup.append(float("nan") if best is None else best)
    ax.step(x, soup, where="post", color="0.6", zorder=1, label="soup so far")
    for i, (_, a, accepted) in zip(x, steps, strict=True):
        ax.scatter(i, a, marker="o" if accepted else "x", color="tab:green" if accepted else "tab:red",
                   s=50, zorder=2)
    ax.scatter([], [], marker="o", color="tab:green", label="accepted")
    ax.scatter([], [], marker="x", color="tab:red", label="rejected")
    ax.set_xticks(list(x), [c for c, _, _ in steps], rotation=45, ha="right", fontsize=7)
    ax.set_xlabel("candidate tried at each step (held-out ranking order)")
    ax.set_ylabel("held-out top-1 (%)")
    ax.set_title("Greedy soup")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def placeholder(name: str, reason: str):
    """A small figure that states why a plot has no data."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(5, 1.5))
    fig.text(0.5, 0.5, f"{name}: no data\n{reason}", ha="center", va="center", fontsize=9, wrap=True)
    return fig

