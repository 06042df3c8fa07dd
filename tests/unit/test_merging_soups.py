"""Uniform soup, WiSE-FT, greedy soup and the registry."""

import operator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clipmerge.errors import ClipmergeError
from clipmerge.layout import METHOD_NAMES
from clipmerge.merging.greedy_soup import greedy_soup
from clipmerge.merging.registry import REGISTRY, get
from clipmerge.merging.uniform_soup import uniform_soup
from clipmerge.merging.wise_ft import wise_ft


def test_uniform_soup_of_copies_is_the_copy():
    w = torch.randn(3, 5)
    assert torch.equal(uniform_soup([w, w.clone(), w.clone(), w.clone()]), w)


def test_uniform_soup_is_the_mean_and_accepts_a_generator():
    ws = [torch.full((2,), float(v)) for v in (1, 2, 6)]
    assert torch.equal(uniform_soup(w for w in ws), torch.full((2,), 3.0))


def test_uniform_soup_keeps_integer_buffers_of_the_first_model():
    assert torch.equal(uniform_soup([torch.arange(3), torch.arange(3) + 5]), torch.arange(3))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1), n=st.integers(1, 6), data=st.data(),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
)
def test_property_uniform_soup_dtype_bounds_and_permutation(seed, n, data, dtype):
    g = torch.Generator().manual_seed(seed)
    ws = [torch.randn(7, generator=g).to(dtype) for _ in range(n)]
    soup = uniform_soup(ws)
    assert soup.dtype == dtype
    stack = torch.stack(ws).float()
    assert (soup.float() >= stack.min(0).values).all() and (soup.float() <= stack.max(0).values).all()
    order = data.draw(st.permutations(range(n)))
    torch.testing.assert_close(uniform_soup([ws[i] for i in order]), soup)


def test_wise_ft_endpoints_are_exact_and_midpoint_is_the_mean():
    zs, ft = torch.randn(4, 4), torch.randn(4, 4)
    assert torch.equal(wise_ft(zs, ft, 0.0), zs)
    assert torch.equal(wise_ft(zs, ft, 1.0), ft)
    torch.testing.assert_close(wise_ft(zs, ft, 0.5), (zs + ft) / 2)
    torch.testing.assert_close(wise_ft(zs, ft, 0.25), 0.75 * zs + 0.25 * ft)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_wise_ft_rejects_alpha_outside_unit_interval(alpha):
    with pytest.raises(ClipmergeError, match="alpha"):
        wise_ft(torch.zeros(1), torch.ones(1), alpha)


def test_wise_ft_preserves_half_precision():
    zs, ft = torch.randn(8).half(), torch.randn(8).half()
    out = wise_ft(zs, ft, 0.3)
    assert out.dtype == torch.float16
    assert torch.equal(out, (0.7 * zs.float() + 0.3 * ft.float()).half())


class ScriptedRun:
    """Candidates are one-tensor states; the evaluator answers from a script, in call order."""

    def __init__(self, values: dict[str, float], trial_accuracies: list[float]):
        self.values, self.script = values, list(trial_accuracies)
        self.loaded, self.evaluated = [], []

    def load(self, name):
        self.loaded.append(name)
        return {"w": torch.tensor([self.values[name]]), "step": torch.tensor([7])}

    def evaluate(self, state):
        self.evaluated.append(float(state["w"]))
        return self.script.pop(0)


SCORES = {"c": 80.0, "a": 90.0, "d": 70.0, "b": 85.0}
VALUES = {"a": 1.0, "b": 3.0, "c": 8.0, "d": 100.0}


def test_greedy_soup_strict_acceptance_as_in_model_soups_code():
    run = ScriptedRun(VALUES, [91.0, 91.0, 89.0])
    result = greedy_soup(list(SCORES), run.load, run.evaluate, scores=SCORES)
    assert [c for c, _ in result.ranking] == ["a", "b", "c", "d"]
    assert run.loaded == ["a", "b", "c", "d"]  # one candidate at a time, in ranking order
    # Trial soups are running averages: (a+b)/2, then ((a+b)/2*2 + c)/3, then same soup + d.
    assert run.evaluated == pytest.approx([2.0, (1 + 3 + 8) / 3, (2 * 2 + 100) / 3])
    assert result.ingredients == ["a", "b"]
    assert result.best_accuracy == 91.0
    assert [(s.candidate, s.accuracy, s.accepted) for s in result.steps] == [
        ("a", 90.0, True), ("b", 91.0, True), ("c", 91.0, False), ("d", 89.0, False),
    ]
    assert float(result.soup["w"]) == pytest.approx(2.0)
    assert int(result.soup["step"]) == 7


def test_greedy_soup_accepts_ties_with_ge_as_in_the_paper():
    run = ScriptedRun(VALUES, [91.0, 91.0, 89.0])
    result = greedy_soup(list(SCORES), run.load, run.evaluate, scores=SCORES, accept=">=")
    assert result.ingredients == ["a", "b", "c"]
    assert float(result.soup["w"]) == pytest.approx(4.0)
    assert run.evaluated[-1] == pytest.approx((4 * 3 + 100) / 4)


def test_greedy_soup_keeps_only_the_best_when_nothing_helps():
    run = ScriptedRun(VALUES, [50.0, 60.0, 70.0])
    result = greedy_soup(list(SCORES), run.load, run.evaluate, scores=SCORES)
    assert result.ingredients == ["a"] and float(result.soup["w"]) == 1.0
    assert result.to_json()["ingredients"] == ["a"]
    assert [s["accepted"] for s in result.to_json()["steps"]] == [True, False, False, False]


def test_greedy_soup_scores_candidates_itself_without_scores():
    run = ScriptedRun(VALUES, [80.0, 90.0, 85.0, 70.0, 95.0, 96.0, 10.0])  # c a b d, then trials
    result = greedy_soup(["c", "a", "b", "d"], run.load, run.evaluate)
    assert [c for c, _ in result.ranking] == ["a", "b", "c", "d"]
    assert result.ingredients == ["a", "b", "c"]


def model_soups_order(candidates, scores):
    """model-soups main.py: sorted(individual accuracies.items(), key=itemgetter(1)), then .reverse()."""
    ranked = sorted(((c, scores[c]) for c in candidates), key=operator.itemgetter(1))
    ranked.reverse()
    return [c for c, _ in ranked]


@pytest.mark.parametrize("scores", [
    dict.fromkeys("bacd", 1.0),  # all tied: the reverse of the given order
    {"b": 85.0, "a": 90.0, "c": 85.0, "d": 70.0},  # one tie in the middle
    {"b": 70.0, "a": 70.0, "c": 90.0, "d": 90.0},  # two ties
])
def test_greedy_soup_orders_ties_as_model_soups_does(scores):
    run = ScriptedRun(VALUES, [0.0] * 3)
    result = greedy_soup(list(scores), run.load, run.evaluate, scores=scores)
    assert [c for c, _ in result.ranking] == model_soups_order(list(scores), scores)
    assert run.loaded == model_soups_order(list(scores), scores)
    if len(set(scores.values())) == 1:
        assert [c for c, _ in result.ranking] == ["d", "c", "a", "b"]


@pytest.mark.parametrize(("accept", "soup"), [(">", 8.0), (">=", (8.0 + 3.0) / 2)])
def test_tied_candidates_with_geq_make_the_soup_model_soups_makes(accept, soup):
    # b and c tie individually; the later one (c) starts the soup, and the tied trial soup (b+c)/2
    # scores the same as c alone: kept only with ">=".
    scores = {"b": 85.0, "c": 85.0}
    run = ScriptedRun(VALUES, [85.0])
    result = greedy_soup(["b", "c"], run.load, run.evaluate, scores=scores, accept=accept)
    assert result.ingredients[0] == "c"
    assert result.ingredients == (["c"] if accept == ">" else ["c", "b"])
    assert float(result.soup["w"]) == pytest.approx(soup)


def test_greedy_soup_argument_errors():
    run = ScriptedRun(VALUES, [])
    with pytest.raises(ClipmergeError, match="accept"):
        greedy_soup(["a"], run.load, run.evaluate, scores=SCORES, accept=">>")
    with pytest.raises(ClipmergeError, match="no held-out score"):
        greedy_soup(["a", "z"], run.load, run.evaluate, scores=SCORES)
    with pytest.raises(ClipmergeError, match="duplicate"):
        greedy_soup(["a", "a"], run.load, run.evaluate, scores=SCORES)


def test_registry_has_the_merge_methods_with_their_references():
    assert METHOD_NAMES == ["uniform_soup", "greedy_soup", "model_stock", "model_stock_periodic", "task_arithmetic",
                            "ties", "dare", "dare_ties", "slerp", "wise_ft"]
    assert set(REGISTRY) == set(METHOD_NAMES) - {"model_stock_periodic"}
    for name, method in REGISTRY.items():
        assert method.name == name and method.pretty_name and method.reference_url.startswith("https://")
        assert callable(method.function)
    assert get("greedy_soup").function is greedy_soup and get("greedy_soup").merge_tensor is None


def test_registry_unknown_name_lists_known_names():
    with pytest.raises(ClipmergeError, match="model_stock.*uniform_soup"):
        get("breadcrumbs")
