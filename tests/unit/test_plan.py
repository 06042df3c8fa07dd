"""The workflow plan derived from config: model ids, flags, seed checks, root checks."""

import copy
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
        "wise_ft_a0.25", "wise_ft_a0.5", "wise_ft_a0.75",
    ]


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
    assert plan.plot_names(config) == ["id_vs_shifts", "wise_ft_curve", "model_stock_ratios", "greedy_soup"]
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
