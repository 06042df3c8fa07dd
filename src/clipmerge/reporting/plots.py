"""The PNG figures of a study, from its result files (matplotlib, Agg backend).

- ``id_vs_shifts.png``: ID vs average-shift top-1 of every model, as in the Model Soups / WiSE-FT
  figures; the WiSE-FT models are joined into a curve from the zero-shot model (alpha 0) to their
  fine-tune (alpha 1).
- ``wise_ft_curve.png``: ID and average-shift top-1 against alpha.
- ``model_stock_geometry.png``: Model Stock's geometry by depth, as the paper plots it: the mean
  pairwise angle between the fine-tunes' deltas, the deltas' norm and the ratio t, one line per tensor
  kind (clipmerge.reporting.geometry), from the post-training merge's merge.json.
- ``model_stock_periodic_geometry.png``: the same numbers for every merge of periodic Model Stock
  (merge_history.json): per kind against the merge step, and per depth for each merge step.
- ``greedy_soup.png``: held-out accuracy at each greedy-soup step, accepted candidates marked.

Every requested plot is written: when the study has no results for it (e.g. no WiSE-FT), the PNG is a
placeholder that says so, so a workflow rule can always declare every output. The two geometry
plots also write the numbers they draw beside the PNG (``<name>.json``, ``layout.PLOTS_WITH_DATA``;
``{"plot", "no_data"}`` for a placeholder).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

from clipmerge import layout
from clipmerge.errors import ClipmergeError
from clipmerge.files import read_json, read_object, write_json
from clipmerge.reporting import geometry

log = logging.getLogger(__name__)

PLOTS = ("id_vs_shifts", "wise_ft_curve", "model_stock_geometry", "model_stock_periodic_geometry", "greedy_soup")
ZEROSHOT = layout.ZEROSHOT
DPI = 120


def write_plots(names: list[str], accuracy: dict, metas: Mapping[str, dict], out_dir, id_set: str,
                merge_diagnostics=None, greedy_diagnostics=None, merge_history=None, intervals=None) -> None:
    """Write ``<out_dir>/<name>.png`` for each of ``names`` (and ``<name>.json`` for the plots in
    ``layout.PLOTS_WITH_DATA``).

    Args:
        accuracy: ``{model: (ID top-1, average-shift top-1)}`` in row order.
        metas: every model's meta.json (the WiSE-FT curves follow their ingredients).
        merge_diagnostics, greedy_diagnostics, merge_history: Model Stock's merge.json, greedy soup's
            greedy.json and periodic Model Stock's merge_history.json, when the study has them (else
            those plots are placeholders).
        intervals: ``{model: ((ID lo, hi), (average-shift lo, hi))}``, the error bars of id_vs_shifts.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on cluster nodes
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = wise_curves(accuracy, metas)
    missing = "not part of this study"
    builders = {"id_vs_shifts": lambda: plot_id_vs_shifts(accuracy, curves, id_set, intervals),
                "wise_ft_curve": lambda: plot_wise_ft_curve(accuracy, curves, id_set),
                "model_stock_geometry": lambda: plot_model_stock_geometry(geometry_data(Path(merge_diagnostics)))
                if merge_diagnostics else f"no Model Stock merge diagnostics ({missing})",
                "model_stock_periodic_geometry":
                    lambda: plot_periodic_geometry(periodic_geometry_data(Path(merge_history)))
                if merge_history else f"no periodic Model Stock merge history ({missing})",
                "greedy_soup": lambda: plot_greedy_soup(Path(greedy_diagnostics))
                if greedy_diagnostics else f"no greedy soup diagnostics ({missing})"}
    for name in names:
        fig, data = builders[name](), None
        if isinstance(fig, tuple):
            fig, data = fig
        if isinstance(fig, str):
            log.warning("%s: %s; writing a placeholder", name, fig)
            data = {"plot": name, "no_data": fig}
            fig = placeholder(name, fig)
        fig.savefig(out_dir / f"{name}.png", dpi=DPI)
        plt.close(fig)
        if name in layout.PLOTS_WITH_DATA:  # layout.plot_data: beside the PNG
            write_json(out_dir / f"{name}.json", data)


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

    # tab10's ten hues, then their light variants: more colors than model kinds (layout.KIND_ORDER)
    colors = plt.get_cmap("tab20").colors
    palette = colors[::2] + colors[1::2]
    return {m: palette[layout.model_sort_key(m)[0] % len(palette)] for m in models}


def plot_id_vs_shifts(accuracy: dict, curves: dict, id_set: str, intervals: Mapping | None = None):
    """Scatter of ID vs average-shift top-1, every model labelled, WiSE-FT curves drawn through, with
    each model's confidence intervals on both axes as error bars when ``intervals`` are given."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5.5), layout="constrained")
    colors = _group_colors(accuracy)
    for finetune, points in curves.items():
        xs, ys = zip(*(accuracy[m] for _, m in points), strict=True)
        ax.plot(xs, ys, "-", color="0.6", zorder=1, label=f"WiSE-FT ({ZEROSHOT} to {finetune})")
    for model, (x, y) in accuracy.items():
        if intervals is not None:
            (x_lo, x_hi), (y_lo, y_hi) = intervals[model]
            ax.errorbar(x, y, xerr=[[x - x_lo], [x_hi - x]], yerr=[[y - y_lo], [y_hi - y]], color=colors[model],
                        alpha=0.5, linewidth=0.8, capsize=2, zorder=1.5)
        ax.scatter(x, y, color=colors[model], s=40, zorder=2, edgecolor="black", linewidth=0.5)
        ax.annotate(model, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(f"ID top-1 (%) on {id_set}")
    ax.set_ylabel("average top-1 (%) over the shifts")
    bars = " (bars: bootstrap intervals)" if intervals is not None else ""
    ax.set_title(f"ID vs distribution-shift accuracy{bars}")
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


def geometry_data(path: Path) -> dict:
    """The numbers ``model_stock_geometry`` draws, from a Model Stock merge.json: per (depth, kind) the
    mean angle, t and delta norm (:func:`clipmerge.reporting.geometry.aggregate`).

    Returns:
        ``{"plot", "source", "model", "n_blocks", "n_tensors", "guarded": {guard: n}, "groups": [row]}``,
        depth -1 being the embeddings (before block 0) and ``n_blocks`` what follows the last block.
    """
    merge = read_object(path)
    tensors = geometry.check_tensors(merge.get("tensors"), path)
    return {"plot": "model_stock_geometry", "source": str(path), "model": merge.get("model"),
            "n_blocks": geometry.block_count(tensors), "n_tensors": len(tensors), "guarded": _guards(tensors),
            "groups": geometry.aggregate(tensors)}


def periodic_geometry_data(path: Path) -> dict:
    """The numbers ``model_stock_periodic_geometry`` draws, from periodic Model Stock's
    merge_history.json: for every merge, the means per kind (over all depths) and per depth (over all
    kinds).

    Returns:
        ``{"plot", "source", "n_blocks", "n_tensors", "groups": {kind: [keys]}, "merges": [{"step",
        "epoch", "guarded", "by_kind": [row], "by_depth": [row]}]}``; the rows omit their keys, which
        ``groups`` (the grouping of the first merge) lists once.
    """
    merges = geometry.merge_steps(read_json(path), path)

    def rows(tensors, by):
        return [{k: v for k, v in row.items() if k != "keys"} for row in geometry.aggregate(tensors, by)]

    first = merges[0]["tensors"]
    return {"plot": "model_stock_periodic_geometry", "source": str(path), "n_blocks": geometry.block_count(first),
            "n_tensors": len(first),
            "groups": {row["kind"]: row["keys"] for row in geometry.aggregate(first, ("kind",))},
            "merges": [{"step": m["step"], "epoch": m.get("epoch"), "guarded": _guards(m["tensors"]),
                        "by_kind": rows(m["tensors"], ("kind",)), "by_depth": rows(m["tensors"], ("depth",))}
                       for m in merges]}


def _guards(tensors: Mapping[str, dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in tensors.values():
        if entry.get("guard"):
            counts[entry["guard"]] = counts.get(entry["guard"], 0) + 1
    return dict(sorted(counts.items()))


# The geometry plots' panels: (row field, y label, log scale).
GEOMETRY_PANELS = (("angle_deg_mean", "angle between deltas (deg)", False),
                   ("delta_norm_mean", "delta norm ||w_i - w0||", True),
                   ("t_mean", "ratio t", False))


def _kind_colors() -> dict[str, str]:
    import matplotlib.pyplot as plt

    palette = plt.get_cmap("tab10").colors
    return {kind: palette[i % len(palette)] for i, kind in enumerate(geometry.KINDS)}


def _values(rows: list[dict], field: str) -> list[float]:
    return [float("nan") if r[field] is None else float(r[field]) for r in rows]


def _set_scale(ax, values: list[float], log_scale: bool) -> None:
    finite = [v for v in values if not math.isnan(v)]
    if log_scale and finite and min(finite) > 0:
        ax.set_yscale("log")


def _depth_ticks(ax, n_blocks: int) -> None:
    ticks = [geometry.BEFORE, *range(n_blocks), n_blocks]
    step = max(1, math.ceil(n_blocks / 16))  # at most ~16 block numbers
    labels = ["emb", *(str(i) if i % step == 0 else "" for i in range(n_blocks)), "out"]
    ax.set_xticks(ticks, labels)


def _guard_note(guarded: Mapping[str, int]) -> str:
    return "; guarded: " + ", ".join(f"{g} {n}" for g, n in guarded.items()) if guarded else ""


def plot_model_stock_geometry(data: dict):
    """Angle, delta norm and t against depth, one line per tensor kind (``data``: :func:`geometry_data`)."""
    import matplotlib.pyplot as plt

    colors = _kind_colors()
    placed = [r for r in data["groups"] if r["depth"] is not None]
    unplaced = sum(r["n_tensors"] for r in data["groups"] if r["depth"] is None)
    fig, axes = plt.subplots(len(GEOMETRY_PANELS), 1, figsize=(8, 8), sharex=True, layout="constrained")
    kinds = [k for k in geometry.KINDS if any(r["kind"] == k for r in placed)]
    for ax, (field, label, log_scale) in zip(axes, GEOMETRY_PANELS, strict=True):
        plotted = []
        for kind in kinds:
            rows = [r for r in placed if r["kind"] == kind]
            values = _values(rows, field)
            plotted += values
            ax.plot([r["depth"] for r in rows], values, "o-", color=colors[kind], markersize=4, linewidth=1.2,
                    label=f"{kind} ({sum(r['n_tensors'] for r in rows)})")
        _set_scale(ax, plotted, log_scale)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if kinds:
        axes[0].legend(fontsize=7, ncol=3, title="kind (tensors)", title_fontsize=7)
    _depth_ticks(axes[-1], data["n_blocks"])
    axes[-1].set_xlabel("depth (emb = embeddings before block 0, out = after the last block)")
    note = f"; {unplaced} tensors without a depth" if unplaced else ""
    axes[0].set_title(f"Model Stock geometry by depth ({data['n_tensors']} tensors{note}"
                      f"{_guard_note(data['guarded'])})", fontsize=10)
    return fig, data


def plot_periodic_geometry(data: dict):
    """Periodic Model Stock, every merge (``data``: :func:`periodic_geometry_data`): angle, delta norm
    and t per kind against the merge step (left), and per depth with one line per merge (right,
    coloured by step)."""
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    merges = data["merges"]
    steps = [m["step"] for m in merges]
    colors = _kind_colors()
    kinds = [k for k in geometry.KINDS if k in data["groups"]]
    fig, axes = plt.subplots(len(GEOMETRY_PANELS), 2, figsize=(12, 8), sharex="col", layout="constrained")
    cmap, norm = plt.get_cmap("viridis"), Normalize(min(steps), max(max(steps), min(steps) + 1))
    for (ax_step, ax_depth), (field, label, log_scale) in zip(axes, GEOMETRY_PANELS, strict=True):
        plotted = []
        for kind in kinds:
            values = [(_values([r for r in m["by_kind"] if r["kind"] == kind], field) or [float("nan")])[0]
                      for m in merges]
            plotted += values
            ax_step.plot(steps, values, "o-", color=colors[kind], markersize=4, linewidth=1.2,
                         label=f"{kind} ({len(data['groups'][kind])})")
        _set_scale(ax_step, plotted, log_scale)
        plotted = []
        for m in merges:
            rows = [r for r in m["by_depth"] if r["depth"] is not None]
            values = _values(rows, field)
            plotted += values
            ax_depth.plot([r["depth"] for r in rows], values, ".-", color=cmap(norm(m["step"])), linewidth=1.0)
        _set_scale(ax_depth, plotted, log_scale)
        ax_step.set_ylabel(label)
        for ax in (ax_step, ax_depth):
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, ncol=2, title="kind (tensors), mean over depths", title_fontsize=7)
    axes[-1][0].set_xlabel("optimizer step of the merge")
    _depth_ticks(axes[-1][1], data["n_blocks"])
    axes[-1][1].set_xlabel("depth (mean over the kinds at each depth)")
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes[:, 1], label="merge step")
    guarded: dict[str, int] = {}
    for m in merges:
        for g, n in m["guarded"].items():
            guarded[g] = guarded.get(g, 0) + n
    fig.suptitle(f"Periodic Model Stock geometry over {len(merges)} merges ({data['n_tensors']} tensors"
                 f"{_guard_note(guarded)})", fontsize=10)
    return fig, data


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

