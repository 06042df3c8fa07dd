"""The workflow plan derived from config: model ids, flags, seed checks, root checks."""

import copy
import json
from pathlib import Path

import pytest
import yaml

from clipmerge import layout
from clipmerge.errors import ClipmergeError
from clipmerge.workflow import plan


@pytest.fixture
def config():
    with open(Path(__file__).parents[2] / "config" / "config.yaml") as fh:
        return yaml.safe_load(fh)


def test_model_ids_follow_table_order(config):
    assert plan.model_ids(config) == [
        "zeroshot", "finetune_seed0", "finetune_seed1", "finetune_seed2", "finetune_seed3",
        "uniform_soup", "greedy_soup", "model_stock", "model_stock_periodic",
        "wise_ft_a0.25", "wise_ft_a0.5", "wise_ft_a0.75", "ensemble",
    ]
    assert plan.evaluated_ids(config) == plan.model_ids(config)[:-1]  # the ensemble has no weights


def test_alpha_ids_are_exact_and_short():
    assert [layout.wise_ft_id(a) for a in (0, 0.5, 1.0, 0.125)] == [
        "wise_ft_a0", "wise_ft_a0.5", "wise_ft_a1", "wise_ft_a0.125"]


def test_cli_flags_skip_excluded_keys_and_render_booleans():
    flags = plan.cli_flags({"seeds": [0, 1], "lr": 1e-4, "reset_optimizer": True, "mixup": False,
                            "merge_every": "epoch"}, exclude={"seeds"})
    assert flags == "--lr 0.0001 --merge-every epoch --reset-optimizer"


def test_adding_a_seed_leaves_finetune_flags_unchanged(config):
    before = plan.cli_flags(config["finetune"], exclude={"seeds"})
    config["finetune"]["seeds"].append(7)
    assert plan.cli_flags(config["finetune"], exclude={"seeds"}) == before


def test_model_stock_defaults_to_first_two_finetunes(config):
    del config["merge"]["model_stock"]
    assert plan.merge_inputs(config, "model_stock") == ["finetune_seed0", "finetune_seed1"]


@pytest.mark.parametrize("seeds,message", [([0], "at least 2"),
                                           ([0, 9], r"\['finetune_seed9'\] are not fine-tunes of this study")])
def test_unusable_seed_lists_are_rejected(config, seeds, message):
    config["merge"]["model_stock"]["seeds"] = seeds
    with pytest.raises(ClipmergeError, match=message):
        plan.check_methods(config)


def test_soups_need_two_finetunes(config):
    config["finetune"]["seeds"] = [0]
    with pytest.raises(ClipmergeError, match="uniform_soup needs at least 2 fine-tunes"):
        plan.check_methods(config)


def test_missing_external_root_names_key_and_layout(config, tmp_path):
    real = copy.deepcopy(config)
    real["model"]["pretrained"] = "openai"
    real["train"]["data"] = {"root": str(tmp_path)}
    real["eval"]["sets"]["test"] = {"adapter": "imagenet", "root": str(tmp_path / "missing")}
    with pytest.raises(ClipmergeError, match=r"eval.sets.test.root: .*missing.* expected layout .*1000 wnid"):
        plan.check_roots(real)


def test_world_split_outside_demo_is_rejected(config):
    config["model"]["pretrained"] = "openai"
    with pytest.raises(ClipmergeError, match="train.data.world_split: only the demo"):
        plan.check_roots(config)


def test_shift_names_must_be_defined(config):
    config["eval"]["shifts"].append("imagenet_c")
    with pytest.raises(ClipmergeError, match="'imagenet_c' is named"):
        plan.check_roots(config)


def test_plots_follow_methods(config):
    assert plan.plot_names(config) == ["id_vs_shifts", "wise_ft_curve", "model_stock_geometry",
                                       "model_stock_periodic_geometry", "greedy_soup"]
    config["merge"]["methods"] = ["uniform_soup", "model_stock_periodic"]
    assert plan.plot_names(config) == ["id_vs_shifts", "model_stock_periodic_geometry"]
    config["merge"]["methods"] = ["uniform_soup"]
    assert plan.plot_names(config) == ["id_vs_shifts"]


def test_config_hash_changes_only_for_dependent_models(config):
    before = {m: plan.config_hash(config, m) for m in plan.model_ids(config)}
    config["merge"]["greedy_soup"]["accept"] = "geq"
    after = {m: plan.config_hash(config, m) for m in plan.model_ids(config)}
    assert [m for m in before if before[m] != after[m]] == ["greedy_soup"]
    config["finetune"]["lr"] = 0.5
    changed = {m for m in before if plan.config_hash(config, m) != after[m]}
    assert changed == set(plan.model_ids(config)) - {"zeroshot"}


def test_a_one_core_evaluation_decodes_in_process():
    assert [plan.loader_workers(t) for t in (1, 2, 8)] == [0, 2, 8]


@pytest.fixture
def with_imports(config, tmp_path):
    hparams = tmp_path / "hparam_info.json"
    hparams.write_text('{"model_0": {"info": "LP initialization"}, "model_1": {"lr": 1e-5}, "model_2": {"lr": 2e-5}}')
    config["imports"] = {"files": "downloads/{name}.pt", "names": ["model_1", "model_0"], "hparams": str(hparams)}
    return config


def test_imported_models_are_fine_tunes_after_the_own_ones(with_imports):
    assert plan.finetuned_ids(with_imports)[-3:] == ["finetune_seed3", "imported_model_1", "imported_model_0"]
    assert plan.model_ids(with_imports)[5:7] == ["imported_model_1", "imported_model_0"]
    assert plan.merge_inputs(with_imports, "uniform_soup") == plan.finetuned_ids(with_imports)
    assert plan.import_source(with_imports, "model_0") == "downloads/model_0.pt"
    assert plan.import_hparams(with_imports) == {"model_1": {"lr": 1e-5}, "model_0": {"info": "LP initialization"}}
    assert layout.parse_model_id("imported_model_1") == layout.ModelId("imported_model_1", "imported", name="model_1")
    assert sorted(["imported_model_10", "imported_model_9", "finetune_seed0"], key=layout.model_sort_key) == [
        "finetune_seed0", "imported_model_9", "imported_model_10"]


def test_merges_pick_imported_fine_tunes_by_id(with_imports):
    with_imports["merge"]["model_stock"] = {"models": ["imported_model_0", "finetune_seed2"]}
    with_imports["merge"]["wise_ft"] = {"model": "imported_model_1", "alphas": [0.5]}
    assert plan.merge_inputs(with_imports, "model_stock") == ["imported_model_0", "finetune_seed2"]
    assert plan.wise_ft_cfg(with_imports) == {"alphas": [0.5], "model": "imported_model_1"}
    with_imports["merge"]["model_stock"] = {"models": ["imported_model_7", "finetune_seed2"]}
    with pytest.raises(ClipmergeError, match=r"\['imported_model_7'\] are not fine-tunes of this study"):
        plan.check_methods(with_imports)


def test_imports_alone_feed_the_soups(with_imports):
    with_imports["finetune"]["seeds"] = []
    with_imports["merge"]["methods"] = ["uniform_soup", "model_stock", "wise_ft"]
    with_imports["merge"].pop("model_stock")
    with_imports["merge"]["wise_ft"] = {"alphas": [0.5]}
    plan.check_methods(with_imports)
    assert plan.merge_inputs(with_imports, "model_stock") == ["imported_model_1", "imported_model_0"]
    assert plan.wise_ft_cfg(with_imports)["model"] == "imported_model_1"


def test_an_hparams_entry_changes_only_the_hashes_of_its_model_and_what_is_made_of_it(with_imports):
    before = {m: plan.config_hash(with_imports, m) for m in plan.model_ids(with_imports)}
    path = Path(with_imports["imports"]["hparams"])
    table = json.loads(path.read_text())
    table["model_1"]["lr"] = 4e-5
    path.write_text(json.dumps(table))
    after = {m: plan.config_hash(with_imports, m) for m in plan.model_ids(with_imports)}
    # the soups and the ensemble take every fine-tune; Model Stock and WiSE-FT name seeds
    assert {m for m in before if before[m] != after[m]} == {"imported_model_1", "uniform_soup", "greedy_soup",
                                                             "ensemble"}


def test_hparams_without_an_imported_name_is_named(with_imports):
    with_imports["imports"]["names"].append("model_9")
    with pytest.raises(ClipmergeError, match=r"has no entry for \['model_9'\]"):
        plan.import_hparams(with_imports)


def test_training_gpus_default_to_one_per_finetune_and_one_per_periodic_seed(config):
    config["finetune"].pop("gpus", None)
    config["merge"]["model_stock_periodic"].pop("gpus", None)  # the demo config sets 1
    assert plan.training_gpus(config, "finetune") == 1
    seeds = plan.method_seeds(config, "model_stock_periodic")
    assert plan.training_gpus(config, "model_stock_periodic") == len(seeds) >= 2
    config["merge"]["model_stock_periodic"]["gpus"] = 1  # lockstep on one GPU
    assert plan.training_gpus(config, "model_stock_periodic") == 1


def test_gpus_are_resources_not_params_nor_provenance(config):
    def identity():
        return (plan.result_flags(config, "finetune"), plan.result_flags(config, "model_stock_periodic"),
                {m: plan.config_hash(config, m) for m in plan.model_ids(config)})
    before = identity()
    config["finetune"]["gpus"] = 1
    config["merge"]["model_stock_periodic"]["gpus"] = 1
    assert identity() == before
    config["merge"]["model_stock_periodic"]["seeds"] = [1, 2]  # the seeds do define the model
    assert plan.config_hash(config, "model_stock_periodic") != before[2]["model_stock_periodic"]


@pytest.mark.parametrize(("section", "gpus", "message"), [
    ("finetune", 4, r"finetune.gpus 4: batch_size \d+ in accum_steps 2 micro-batches cannot be split over 4 ranks"),
    ("model_stock_periodic", 3, r"model_stock_periodic.gpus: 3; 1 \(the seeds in turn on one GPU\) or 2"),
])
def test_gpu_counts_that_cannot_work_stop_before_any_job(config, section, gpus, message):
    config["finetune"]["accum_steps"] = 2
    config["merge"]["model_stock_periodic"]["seeds"] = [0, 1]
    (config["finetune"] if section == "finetune" else config["merge"]["model_stock_periodic"])["gpus"] = gpus
    with pytest.raises(ClipmergeError, match=message):
        plan.check_methods(config)
    config["finetune"]["accum_steps"] = 4
    if section == "finetune":
        assert plan.training_gpus(config, "finetune") == 4


def test_the_ensemble_takes_every_fine_tune_unless_told(config, tmp_path):
    assert plan.ensemble_members(config) == [f"finetune_seed{k}" for k in range(4)]
    assert plan.ensemble_members({**config, "ensemble": {"enabled": False}}) == []
    assert layout.ENSEMBLE not in plan.model_ids({**config, "ensemble": {"enabled": False}})
    chosen = {**config, "ensemble": {"models": ["finetune_seed1", "finetune_seed3"]}}
    assert plan.ensemble_members(chosen) == ["finetune_seed1", "finetune_seed3"]
    one = copy.deepcopy(config)
    one["finetune"]["seeds"] = [0]
    assert plan.ensemble_members(one) == []  # one fine-tune: no ensemble row
    with pytest.raises(ClipmergeError, match=r"ensemble.models: \[.finetune_seed9.\]"):
        plan.check_methods({**config, "ensemble": {"models": ["finetune_seed0", "finetune_seed9"]}})


def test_the_ensembles_provenance_is_its_members(config):
    chosen = {**config, "ensemble": {"models": ["finetune_seed1", "finetune_seed3"]}}
    assert plan.config_hash(chosen, layout.ENSEMBLE) != plan.config_hash(config, layout.ENSEMBLE)
    assert plan.config_hash(chosen, "model_stock") == plan.config_hash(config, "model_stock")


TASK_VECTOR_METHODS = ["task_arithmetic", "ties", "dare", "dare_ties", "slerp"]


@pytest.fixture
def with_task_vectors(config):
    config["merge"]["methods"] = [*config["merge"]["methods"][:-1], *TASK_VECTOR_METHODS, "wise_ft"]
    return config


def test_task_vector_merges_take_every_fine_tune_and_slerp_the_first_two(with_task_vectors):
    config = with_task_vectors
    every = [f"finetune_seed{k}" for k in range(4)]
    for method in ("task_arithmetic", "ties", "dare", "dare_ties"):
        assert plan.merge_inputs(config, method) == every
    assert plan.merge_inputs(config, "slerp") == ["finetune_seed0", "finetune_seed1"]
    config["merge"]["ties"] = {"seeds": [1, 3]}
    config["merge"]["slerp"] = {"models": ["finetune_seed3", "finetune_seed2"]}
    assert plan.merge_inputs(config, "ties") == ["finetune_seed1", "finetune_seed3"]
    assert plan.merge_inputs(config, "slerp") == ["finetune_seed3", "finetune_seed2"]
    plan.check_methods(config)
    ids = plan.merged_ids(config)
    assert ids[ids.index("model_stock_periodic") + 1:][:5] == TASK_VECTOR_METHODS


@pytest.mark.parametrize("method, section, message", [
    ("slerp", {"seeds": [0, 1, 2]}, "exactly 2"),
    ("dare", {"seeds": [0, 9]}, r"merge.dare.seeds: \['finetune_seed9'\] are not fine-tunes"),
    ("ties", {"seeds": [0], "models": ["finetune_seed1"]}, "give models, ingredients, or seeds and/or variants"),
])
def test_unusable_task_vector_inputs_are_rejected(with_task_vectors, method, section, message):
    with_task_vectors["merge"][method] = section
    with pytest.raises(ClipmergeError, match=message):
        plan.check_methods(with_task_vectors)


def test_task_vector_flags_are_their_options_without_the_inputs(with_task_vectors):
    config = with_task_vectors
    assert plan.result_flags(config, "ties") == ""  # no section: the command's defaults (the schema's)
    config["merge"]["ties"] = {"seeds": [0, 1], "density": 0.3, "scale": 1.0}
    config["merge"]["dare"] = {"models": ["finetune_seed0", "finetune_seed1"], "drop_rate": 0.5, "mask_seed": 2}
    config["merge"]["slerp"] = {"t": 0.25, "space": "weights"}
    assert plan.result_flags(config, "ties") == "--density 0.3 --scale 1.0"
    assert plan.result_flags(config, "dare") == "--drop-rate 0.5 --mask-seed 2"
    assert plan.result_flags(config, "slerp") == "--space weights --t 0.25"


def test_task_vector_config_hashes_follow_their_options_and_inputs(with_task_vectors):
    config = with_task_vectors
    before = {m: plan.config_hash(config, m) for m in TASK_VECTOR_METHODS}
    config["merge"]["ties"] = {"density": 0.5}
    assert [m for m in TASK_VECTOR_METHODS if plan.config_hash(config, m) != before[m]] == ["ties"]
    config["merge"]["ties"] = {}
    config["finetune"]["seeds"].append(7)  # every fine-tune by default; slerp's first two are unchanged
    changed = [m for m in TASK_VECTOR_METHODS if plan.config_hash(config, m) != before[m]]
    assert changed == ["task_arithmetic", "ties", "dare", "dare_ties"]


@pytest.fixture
def with_sweep(config):
    """The demo config with a 3-variant random search over a small space, the soups over the sweep."""
    config["sweep"] = {"variants": 3, "seed": 0, "space": {"lr": {"log_uniform": [1e-4, 1e-3]},
                                                         "epochs": {"int_uniform": [2, 4]}}}
    config["merge"]["uniform_soup"] = {"ingredients": "sweep"}
    config["merge"]["greedy_soup"]["ingredients"] = "sweep"
    return config


def test_sweep_variants_are_fine_tunes_after_the_seeds(with_sweep):
    assert plan.sweep_ids(with_sweep) == ["finetune_hp0", "finetune_hp1", "finetune_hp2"]
    assert plan.trained_ids(with_sweep) == [*plan.finetune_ids(with_sweep), *plan.sweep_ids(with_sweep)]
    assert plan.model_ids(with_sweep)[5:8] == plan.sweep_ids(with_sweep)
    assert sorted(["finetune_hp10", "finetune_hp2", "finetune_seed1"], key=layout.model_sort_key) == [
        "finetune_seed1", "finetune_hp2", "finetune_hp10"]
    assert [plan.training_seed(with_sweep, m) for m in ("finetune_seed3", "finetune_hp2")] == [3, 2]


def test_a_variants_recipe_is_the_finetune_section_with_its_overrides(with_sweep):
    seed_flags = plan.recipe_flags(with_sweep, "finetune_seed0")
    assert seed_flags == plan.result_flags(with_sweep, "finetune")  # the seeds' recipe, as periodic Model Stock's
    drawn = plan.sweep_variants(with_sweep)[1]
    section = plan.recipe_section(with_sweep, "finetune_hp1")
    assert section == {**plan.base_recipe(with_sweep), **drawn} and set(drawn) == {"lr", "epochs"}
    assert f"--lr {drawn['lr']}" in plan.recipe_flags(with_sweep, "finetune_hp1")


def test_an_explicit_variant_may_set_its_training_seed(config):
    config["sweep"] = {"variants": [{"lr": 1e-4}, {"lr": 2e-4, "seed": 9}]}
    assert [plan.training_seed(config, m) for m in plan.sweep_ids(config)] == [0, 9]
    assert "seed" not in plan.recipe_section(config, "finetune_hp1")


def test_merges_name_their_ingredients(with_sweep):
    sweep_ids = plan.sweep_ids(with_sweep)
    assert plan.merge_inputs(with_sweep, "uniform_soup") == sweep_ids
    assert plan.merge_inputs(with_sweep, "greedy_soup") == sweep_ids
    assert plan.merge_inputs(with_sweep, "model_stock") == ["finetune_seed0", "finetune_seed1"]
    with_sweep["merge"]["model_stock"] = {"seeds": [2], "variants": [0]}
    assert plan.merge_inputs(with_sweep, "model_stock") == ["finetune_seed2", "finetune_hp0"]
    with_sweep["merge"]["uniform_soup"] = {"ingredients": "all"}
    assert plan.merge_inputs(with_sweep, "uniform_soup") == plan.finetuned_ids(with_sweep)
    del with_sweep["merge"]["uniform_soup"]  # the default: every fine-tune, as before sweeps existed
    assert plan.merge_inputs(with_sweep, "uniform_soup") == plan.finetuned_ids(with_sweep)
    with_sweep["merge"]["wise_ft"] = {"alphas": [0.5], "variant": 2}
    assert plan.wise_ft_cfg(with_sweep)["model"] == "finetune_hp2"
    with_sweep["ensemble"] = {"variants": [0, 1]}
    assert plan.ensemble_members(with_sweep) == ["finetune_hp0", "finetune_hp1"]


@pytest.mark.parametrize(("section", "value", "message"), [
    ("model_stock", {"variants": [0, 7]}, r"merge.model_stock.variants: \['finetune_hp7'\] are not fine-tunes"),
    ("model_stock", {"models": ["finetune_seed0", "finetune_hp0"], "seeds": [1]},
     "merge.model_stock: give models, ingredients, or seeds and/or variants, not models and seeds"),
    ("uniform_soup", {"ingredients": "imported"}, r"uniform_soup needs at least 2 fine-tunes .*got \[\]"),
    ("wise_ft", {"seed": 0, "variant": 1}, "merge.wise_ft: give one of model, seed or variant, not seed and variant"),
])
def test_ingredient_sets_that_cannot_work_stop_before_any_job(with_sweep, section, value, message):
    with_sweep["merge"][section] = value
    with pytest.raises(ClipmergeError, match=message):
        plan.check_methods(with_sweep)


def test_changing_the_sweep_changes_only_the_variants_and_what_is_made_of_them(with_sweep):
    before = {m: plan.config_hash(with_sweep, m) for m in plan.model_ids(with_sweep)}
    with_sweep["sweep"]["variants"] = 4  # a new variant: the old ones keep their hashes
    after = {m: plan.config_hash(with_sweep, m) for m in plan.model_ids(with_sweep)}
    assert {m for m in before if before[m] != after[m]} == {"uniform_soup", "greedy_soup", "ensemble"}
    with_sweep["sweep"]["seed"] = 1
    reseeded = {m: plan.config_hash(with_sweep, m) for m in plan.model_ids(with_sweep)}
    assert {m for m in after if after[m] != reseeded[m]} == {
        *plan.sweep_ids(with_sweep), "uniform_soup", "greedy_soup", "ensemble"}


def test_a_sweep_that_contradicts_the_recipe_stops_before_any_job(with_sweep):
    with_sweep["finetune"]["steps"] = 100
    with pytest.raises(ClipmergeError, match="sweep.space.epochs: finetune.steps is set and overrides epochs"):
        plan.check_methods(with_sweep)
    del with_sweep["finetune"]["steps"]
    with_sweep["sweep"] = {"variants": [{"accum_steps": 3}]}
    with pytest.raises(ClipmergeError, match=r"sweep variant finetune_hp0: invalid fine-tuning recipe: accum_steps=3"):
        plan.check_methods(with_sweep)
    with_sweep["sweep"] = {"variants": [{"accum_steps": 1}]}
    with_sweep["merge"].pop("uniform_soup"), with_sweep["merge"]["greedy_soup"].pop("ingredients")  # 1 variant
    with_sweep["finetune"].update(accum_steps=2, gpus=2)  # the seeds split over 2 ranks, the variant cannot
    with pytest.raises(ClipmergeError, match=r"finetune.gpus 2: batch_size 32 in accum_steps 1 micro-batches"):
        plan.check_methods(with_sweep)
