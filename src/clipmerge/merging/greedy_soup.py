"""Greedy soup (Wortsman et al., ICML 2022, Recipe 1), the pure search over candidate models.

As coded in model-soups ``main.py``: sort candidates by held-out accuracy (descending), start the soup
with the best, then for each next candidate form the running uniform average
``soup * n/(n+1) + w/(n+1)``, evaluate it on the held-out set and keep it only if it beats the best
accuracy so far. One pass, no revisiting.

Choices:
- Acceptance is strict (``accept=">"``) as in the code; the paper's Recipe 1 writes ">=" (option).
- Ties in the individual accuracies are ordered as model-soups orders them: it sorts ascending by
  accuracy (a stable sort, so tied candidates keep their given order) and then reverses the list, so
  among equal accuracies the candidate given *later* comes first.
- Only the running soup and one candidate are in memory: ``load`` is called once per candidate, when
  it is needed, and the candidate's dict is overwritten in place with the trial soup.
- The soup is kept in the candidates' dtype; each average is computed in float32 (float64 stays
  float64). Non-floating tensors are kept from the first ingredient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch

from clipmerge.errors import ClipmergeError

StateDict = MutableMapping[str, torch.Tensor]


@dataclass
class GreedyStep:
    """One candidate tried: the held-out accuracy of the soup it would make, and the decision.
    For the first (best) candidate the accuracy is its own and it is always accepted."""

    candidate: str
    accuracy: float
    accepted: bool


@dataclass
class GreedyResult:
    soup: StateDict
    ingredients: list[str]
    best_accuracy: float
    ranking: list[tuple[str, float]]
    steps: list[GreedyStep] = field(default_factory=list)

    def to_json(self) -> dict:
        """The ``greedy.json`` content (everything but the weights)."""
        return {
            "ranking": [{"candidate": c, "accuracy": a} for c, a in self.ranking],
            "steps": [asdict(s) for s in self.steps],
            "ingredients": self.ingredients,
            "best_accuracy": self.best_accuracy,
        }


def greedy_soup(
    candidates: Sequence[str],
    load: Callable[[str], StateDict],
    evaluate: Callable[[StateDict], float],
    *,
    scores: Mapping[str, float] | None = None,
    accept: Literal[">", ">="] = ">",
) -> GreedyResult:
    """Run the greedy soup search.

    Args:
        candidates: candidate model ids (distinct).
        load: returns the state dict of a candidate id. Called once per candidate, in ranking order;
            the returned dict is consumed (its tensors are replaced by the trial soup's).
        evaluate: held-out top-1 accuracy of a state dict (any consistent scale, e.g. percent).
        scores: the candidates' own held-out accuracies, if already known (e.g. from eval JSONs).
            If None, each candidate is loaded and evaluated once to rank them (one in memory at a time).
        accept: ">" (model-soups code, default) or ">=" (paper's Recipe 1).

    Returns:
        The soup state dict, accepted ingredients in order, its held-out accuracy, the ranking and
        every step.
    """
    if accept not in (">", ">="):
        raise ClipmergeError(f"greedy_soup: accept must be '>' or '>=', got {accept!r}")
    if not candidates:
        raise ClipmergeError("greedy_soup needs at least 1 candidate")
    if len(set(candidates)) != len(candidates):
        raise ClipmergeError(f"greedy_soup: duplicate candidates in {list(candidates)}")
    if scores is None:
        scores = {c: float(evaluate(load(c))) for c in candidates}
    missing = [c for c in candidates if c not in scores]
    if missing:
        raise ClipmergeError(f"greedy_soup: no held-out score for {missing}")

    # model-soups: sorted(..., key=itemgetter(1)) then reversed, i.e. ties in reverse input order.
    ranking = sorted(((c, float(scores[c])) for c in candidates), key=lambda ca: ca[1])[::-1]
    best_name, best = ranking[0]
    soup = load(best_name)
    result = GreedyResult(soup, [best_name], best, ranking, [GreedyStep(best_name, best, True)])
    for name, _ in ranking[1:]:
        n = len(result.ingredients)
        trial = _mix_into(load(name), result.soup, n)
        accuracy = float(evaluate(trial))
        accepted = accuracy > result.best_accuracy or (accept == ">=" and accuracy == result.best_accuracy)
        result.steps.append(GreedyStep(name, accuracy, accepted))
        if accepted:
            result.soup, result.best_accuracy = trial, accuracy
            result.ingredients.append(name)
    return result


def _mix_into(candidate: StateDict, soup: StateDict, n: int) -> StateDict:
    """Overwrite ``candidate`` with ``soup * n/(n+1) + candidate/(n+1)``, tensor by tensor."""
    if candidate.keys() != soup.keys():
        diff = sorted(set(candidate) ^ set(soup))
        raise ClipmergeError(f"greedy_soup: candidate keys differ from the soup's (e.g. {diff[:3]})")
    for key, w in candidate.items():
        s = soup[key]
        if w.shape != s.shape or w.dtype != s.dtype:
            raise ClipmergeError(f"greedy_soup: tensor {key!r} differs in shape or dtype from the soup's")
        if not s.is_floating_point():
            candidate[key] = s
            continue
        compute = torch.promote_types(s.dtype, torch.float32)
        mixed = s.to(compute).mul(n / (n + 1)).add_(w.to(compute), alpha=1.0 / (n + 1))
        candidate[key] = mixed.to(s.dtype)
    return candidate
