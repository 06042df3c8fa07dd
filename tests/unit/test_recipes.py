"""The recipes companion table: each row's seed and hyper-parameters, or its ingredients."""

import pandas as pd

from clipmerge.reporting.recipes import recipe_markdown, recipe_table, short_ingredients


def metas():
    recipe = {"lr": 1e-4, "weight_decay": 0.1, "epochs": 2, "label_smoothing": 0.0, "mixup_alpha": 0.0,
              "randaugment_ops": 2, "randaugment_magnitude": 9, "batch_size": 32}
    return {
        "zeroshot": {"model": "zeroshot", "method": "zeroshot", "seed": None, "ingredients": [], "hparams": {}},
        "finetune_seed0": {"model": "finetune_seed0", "method": "finetune", "seed": 0, "hparams": recipe},
        "finetune_hp1": {"model": "finetune_hp1", "method": "finetune", "seed": 1,
                         "hparams": {**recipe, "lr": 3e-4, "randaugment_ops": 0}},
        "imported_model_4": {"model": "imported_model_4", "method": "imported", "seed": None,
                             "hparams": {"lr": 2e-5, "weight_decay": 0.2, "augment": "rand-m12-n1"}},
        "model_stock_periodic": {"model": "model_stock_periodic", "method": "model_stock_periodic", "seed": None,
                                 "hparams": {**recipe, "seeds": [0, 1]}},
        "uniform_soup": {"model": "uniform_soup", "method": "uniform_soup", "seed": None, "hparams": {"n": 3},
                         "ingredients": ["finetune_seed0", "finetune_hp1", "imported_model_4"]},
    }


def test_a_row_per_model_with_its_recipe_or_ingredients():
    table = recipe_table(metas(), list(metas()))
    assert list(table.index) == list(metas())
    assert table.loc["finetune_hp1", "lr"] == 3e-4 and table.loc["finetune_hp1", "seed"] == 1
    augment = [None if pd.isna(v) else v for v in table["augment"]]
    assert augment == [None, "tv-rand-m9-n2", "none", "rand-m12-n1", "tv-rand-m9-n2", None]
    assert pd.isna(table.loc["imported_model_4", "epochs"])  # not in its hparam_info.json entry
    assert pd.isna(table.loc["uniform_soup", "lr"])  # a merge trained nothing itself
    assert table.loc["model_stock_periodic", "seed"] == "0 1" and table.loc["model_stock_periodic", "epochs"] == 2
    assert table.loc["uniform_soup", "ingredients"] == "finetune_seed0 finetune_hp1 imported_model_4"


def test_the_markdown_groups_ingredients_by_kind():
    assert short_ingredients(["finetune_seed0", "finetune_seed1", "finetune_hp2", "imported_model_4"]) == \
        "seeds 0 1 · sweep 2 · imported model_4"
    assert short_ingredients(["greedy_soup", "finetune_hp0"]) == "greedy_soup · sweep 0"
    markdown = recipe_markdown(recipe_table(metas(), list(metas())))
    assert "seeds 0 · sweep 1 · imported model_4" in markdown and "None" not in markdown
