"""Hyper-parameter sweeps: the draw rule, the default space, and the checks that stop a bad space."""

import pytest

from clipmerge.errors import ClipmergeError
from clipmerge.training import sweep
from clipmerge.training.recipe import Recipe, rand_augment_name

# Variants 0 and 1 of the default space with seed 0: the draw is sha256 and integer/float arithmetic
# only, so these are the values on every machine and Python; a change here changes every study's sweep.
DRAWN_SEED0 = [
    {"epochs": 6, "label_smoothing": 0.06912, "lr": 2.839e-05, "mixup_alpha": 0.8994, "randaugment_magnitude": 11,
     "randaugment_ops": 0, "weight_decay": 0.007311},
    {"epochs": 4, "label_smoothing": 0.1069, "lr": 5.228e-05, "mixup_alpha": 0.3855, "randaugment_magnitude": 14,
     "randaugment_ops": 0, "weight_decay": 0.1958},
]


def test_the_same_seed_draws_the_same_variants_on_any_machine():
    assert sweep.variants({"variants": 2, "seed": 0}) == DRAWN_SEED0
    assert sweep.variants({"variants": 2}) == DRAWN_SEED0  # seed 0 is the default
    assert sweep.variants({"variants": 2, "seed": 1}) != DRAWN_SEED0


def test_adding_variants_keeps_the_earlier_ones():
    assert sweep.variants({"variants": 7, "seed": 3})[:4] == sweep.variants({"variants": 4, "seed": 3})


def test_adding_a_key_to_the_space_keeps_the_other_keys_values():
    space = {"lr": {"log_uniform": [1e-5, 1e-3]}}
    wider = {**space, "epochs": {"int_uniform": [1, 3]}}
    narrow = sweep.variants({"variants": 5, "space": space})
    assert [{"lr": v["lr"]} for v in sweep.variants({"variants": 5, "space": wider})] == narrow


def test_draws_stay_in_the_default_space_and_switch_parts_off_at_its_rates():
    drawn = sweep.variants({"variants": 400, "seed": 0})
    for key, spec in sweep.MODEL_SOUPS_SPACE.items():
        (dist, (low, high)), = ((d, v) for d, v in spec.items() if d != "p_zero")
        values = [v[key] for v in drawn]
        assert all(low <= x <= high for x in values if x != 0), key
        assert all(isinstance(x, int) for x in values) == (dist == "int_uniform"), key
        off = sum(x == 0 for x in values) / len(values)
        expected = spec.get("p_zero", 0) + (1 - spec.get("p_zero", 0)) * (dist == "int_uniform" and low == 0) / (
            high - low + 1)
        assert off == pytest.approx(expected, abs=0.07), key
    lrs = sorted(v["lr"] for v in drawn)  # log-uniform: the median is the bounds' geometric mean, 1e-5
    assert 5e-6 < lrs[len(lrs) // 2] < 2e-5


def test_every_default_variant_is_a_valid_recipe():
    for overrides in sweep.variants({"variants": 50}):
        Recipe(**overrides)


def test_explicit_variants_are_taken_as_given():
    given = [{"lr": 1e-5}, {"lr": 3e-5, "epochs": 2, "seed": 7}]
    assert sweep.variants({"variants": given}) == given


@pytest.mark.parametrize(("space", "message"), [
    ({"lr": {"log_uniform": [1e-4, 1e-6]}}, r"sweep.space.lr.log_uniform: low 0.0001 > high 1e-06"),
    ({"lr": {"log_uniform": [0, 1e-4]}}, r"sweep.space.lr.log_uniform: bounds must be positive"),
    ({"epochs": {"uniform": [4, 16]}}, r"sweep.space.epochs: epochs takes int values; use int_uniform or choice"),
    ({"lr": {"int_uniform": [1, 2]}}, r"sweep.space.lr: lr takes float values; use uniform, log_uniform or choice"),
    ({"epochs": {"choice": [4, 8.5]}}, r"sweep.space.epochs.choice: epochs takes int values"),
    ({"learning_rate": {"uniform": [0, 1]}}, r"sweep.space.learning_rate: 'learning_rate' is not a fine-tuning"),
    ({"mixup_alpha": {"uniform": [0, 1], "p_zero": 1.5}}, r"sweep.space.mixup_alpha.p_zero: a probability"),
    ({"no_decay_1d": {"uniform": [0, 1]}}, r"sweep.space.no_decay_1d: no_decay_1d is a switch"),
    ({}, r"sweep.space: empty"),
])
def test_a_bad_space_is_refused_naming_the_key(space, message):
    with pytest.raises(ClipmergeError, match=message):
        sweep.variants({"variants": 2, "space": space})


def test_an_explicit_variant_with_an_unknown_key_is_named():
    with pytest.raises(ClipmergeError, match=r"sweep.variants\[1\]: 'learning_rate' is not a fine-tuning"):
        sweep.variants({"variants": [{"lr": 1e-5}, {"learning_rate": 1e-5}]})


@pytest.mark.parametrize("key", ["space", "seed"])
def test_a_random_search_key_beside_explicit_variants_is_refused(key):
    with pytest.raises(ClipmergeError, match=rf"sweep.{key}: a random search's"):
        sweep.variants({"variants": [{"lr": 1e-5}], key: {"space": {"lr": {"uniform": [0, 1]}}, "seed": 1}[key]})


def test_a_drawn_recipe_that_is_no_recipe_is_named():
    with pytest.raises(ClipmergeError, match=r"sweep variant finetune_hp0: invalid fine-tuning recipe: label_smo"):
        sweep.check_recipe({"label_smoothing": 1.5}, "sweep variant finetune_hp0")


def test_rand_augment_in_model_soups_notation():
    assert rand_augment_name({"randaugment_ops": 2, "randaugment_magnitude": 9}) == "tv-rand-m9-n2"  # not timm's
    assert rand_augment_name({"randaugment_ops": 0, "randaugment_magnitude": 9}) == "none"
    assert rand_augment_name({"lr": 1e-5}) is None
    assert rand_augment_name({"augment": "rand-m12-n1", "randaugment_ops": 2}) == "rand-m12-n1"  # an import's own
