"""Which recipe each row of the comparison table used (tables/recipes.{csv,md}, linked from
comparison.md): a fine-tune's seed and hyper-parameters — the keys of model-soups' sweep, read from its
meta.json, so seeds, sweep variants and imported model-soups fine-tunes share the columns — and a merge's
or the ensemble's ingredients.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from clipmerge import layout
from clipmerge.training.recipe import rand_augment_name

HPARAM_COLUMNS = ("lr", "weight_decay", "epochs", "label_smoothing", "mixup_alpha")
COLUMNS = ("method", "seed", *HPARAM_COLUMNS, "augment", "ingredients")


# The training runs that are not fine-tunes: periodic Model Stock trains its seeds with the seeds' recipe.
TRAINING_RUNS = ("model_stock_periodic",)


def recipe_table(metas: Mapping[str, dict], models: Iterable[str]) -> pd.DataFrame:
    """One row per model, in the given (table) order: a training run's seed (periodic Model Stock's
    seeds), hyper-parameters and RandAugment (:func:`rand_augment_name`), blank where its meta.json does
    not record one; a made model's ingredients, space-separated."""
    rows = {}
    for model in models:
        meta = metas.get(model, {})
        hparams = meta.get("hparams", {})
        kind = layout.parse_model_id(model).kind
        trained = kind in layout.FINETUNE_KINDS or kind in TRAINING_RUNS
        seeds = hparams.get("seeds")
        rows[model] = {
            "method": meta.get("method", model),
            "seed": " ".join(map(str, seeds)) if isinstance(seeds, list) else meta.get("seed"),
            **{k: hparams.get(k) if trained else None for k in HPARAM_COLUMNS},
            "augment": rand_augment_name(hparams) if trained else None,
            "ingredients": " ".join(meta.get("ingredients", [])),
        }
    # object dtype from the start: an int column with blanks would become floats (epochs 4.0)
    table = pd.DataFrame(list(rows.values()), index=list(rows), columns=list(COLUMNS), dtype=object)
    table.index.name = "model"
    return table


def recipe_markdown(table: pd.DataFrame) -> str:
    """The recipe table with ingredient lists shortened by kind (``seeds 0 1 · sweep 0 1 2``)."""
    shown = table.astype(object).where(table.notna(), "")
    shown["ingredients"] = [short_ingredients(v.split()) for v in table["ingredients"]]
    return shown.astype(str).to_markdown(disable_numparse=True)


def short_ingredients(models: list[str]) -> str:
    """``[finetune_seed0, finetune_seed1, finetune_hp0]`` -> ``seeds 0 1 · sweep 0``; other ids as they are."""
    groups: dict[str, list[str]] = {}
    for model in models:
        parsed = layout.parse_model_id(model)
        if parsed.kind == layout.FINETUNE:
            groups.setdefault("seeds", []).append(str(parsed.seed))
        elif parsed.kind == layout.SWEEP:
            groups.setdefault("sweep", []).append(str(parsed.variant))
        elif parsed.kind == layout.IMPORTED:
            groups.setdefault("imported", []).append(parsed.name)
        else:
            groups.setdefault("", []).append(model)
    return " · ".join(f"{kind} {' '.join(items)}".strip() for kind, items in groups.items())
