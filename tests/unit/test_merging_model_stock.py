"""Model Stock per tensor: the paper's geometry, the guards, and properties on random tensors."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clipmerge.errors import ClipmergeError
from clipmerge.merging.model_stock import model_stock


def equiangular_deltas(n: int, cos: float, dim: int = 64, seed: int = 0) -> list[torch.Tensor]:
    """n unit vectors with every pairwise cosine equal to ``cos`` (>= 0), in random directions."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(dim, n + 1, dtype=torch.float64, generator=g))
    common, own = basis[:, 0], basis[:, 1:]
    return [math.sqrt(cos) * common + math.sqrt(1 - cos) * own[:, i] for i in range(n)]


def test_identical_finetunes_give_themselves_back():
    w0 = torch.randn(5, 7)
    w1 = w0 + torch.randn(5, 7)
    merged, diag = model_stock([w1, w1.clone(), w1.clone()], w0)
    assert diag.t == pytest.approx(1.0, abs=1e-6) and diag.guard is None
    torch.testing.assert_close(merged, w1)


def test_orthogonal_deltas_give_the_anchor():
    w0 = torch.randn(64)
    d1, d2 = (d.float() for d in equiangular_deltas(2, 0.0))
    merged, diag = model_stock([w0 + d1, w0 + d2], w0)
    assert diag.cos == pytest.approx(0.0, abs=1e-6)
    assert diag.angle_deg == pytest.approx(90.0, abs=1e-4)
    assert diag.t == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(merged, w0, atol=1e-6, rtol=0)


@pytest.mark.parametrize("n, cos", [(2, 0.3), (2, 0.8), (3, 0.5), (5, 0.2)])
def test_result_is_the_orthocentre_on_the_line_to_the_average(n, cos):
    # Paper's geometry: equal-norm deltas, equal angles, and a centre mu with every (w_i - mu) and
    # (w0 - mu) mutually orthogonal. Projected onto the span of the w's, mu is the point w_H with
    # (w_H - w_i) orthogonal to (w_j - w0) for all i != j: the orthocentre of the triangle w0, w1, w2
    # (N = 2), of the simplex for larger N. Model Stock must return that point, on segment w0 -> w_avg.
    w0 = torch.randn(64, dtype=torch.float64)
    ws = [w0 + 3.0 * d for d in equiangular_deltas(n, cos)]
    merged, diag = model_stock(ws, w0)
    assert diag.t == pytest.approx(n * cos / (1 + (n - 1) * cos), rel=1e-9)
    along = merged - w0
    avg_dir = torch.stack(ws).mean(0) - w0
    assert torch.allclose(along, diag.t * avg_dir, atol=1e-12)  # on the line, at fraction t in [0, 1]
    assert 0 <= diag.t <= 1
    for i in range(n):
        for j in range(n):
            if i != j:
                dot = torch.dot(merged - ws[i], ws[j] - w0) / (ws[j] - w0).norm() ** 2
                assert abs(float(dot)) < 1e-9


def test_two_models_formula_from_the_readme():
    w0 = torch.zeros(64)
    d1, d2 = (d.float() for d in equiangular_deltas(2, 0.6))
    _, diag = model_stock([w0 + d1, w0 + d2], w0)
    assert diag.t == pytest.approx(2 * 0.6 / 1.6, abs=1e-5)


def test_mean_of_angles_differs_from_mean_of_cosines_for_three_models():
    # Pairwise angles 0, 60, 60 degrees: mean angle 40 -> cos 0.766; mean cosine (1 + .5 + .5)/3 = 0.667.
    e1, e2 = torch.eye(2)
    d1 = e1
    d3 = 0.5 * e1 + math.sqrt(0.75) * e2
    w0 = torch.zeros(2)
    _, by_angle = model_stock([d1, d1.clone(), d3], w0)
    _, by_cos = model_stock([d1, d1.clone(), d3], w0, average="cosines")
    assert by_angle.angle_deg == pytest.approx(40.0, abs=1e-3)
    assert by_angle.cos == pytest.approx(math.cos(math.radians(40)), abs=1e-5)
    assert by_cos.cos == pytest.approx(2 / 3, abs=1e-5)


def test_negative_cosine_is_clamped_to_the_anchor_by_default():
    w0 = torch.randn(64)
    d1 = equiangular_deltas(1, 0.0)[0].float()
    merged, diag = model_stock([w0 + d1, w0 - 0.5 * d1], w0)
    assert diag.guard == "negative_cos" and diag.cos == 0.0 and diag.t == 0.0
    assert diag.angle_deg == pytest.approx(180.0, abs=0.1)  # acos is ill-conditioned near -1
    assert torch.equal(merged, w0)


def test_negative_cosine_without_clamp_extrapolates_or_refuses_when_singular():
    w0 = torch.zeros(3)
    d1, d2 = torch.tensor([1.0, 0, 0]), torch.tensor([-0.5, 2.0, 0])
    merged, diag = model_stock([d1, d2], w0, clamp_negative=False)
    cos = -0.5 / math.sqrt(4.25)
    assert diag.t == pytest.approx(2 * cos / (1 + cos), abs=1e-6)
    torch.testing.assert_close(merged, diag.t * (d1 + d2) / 2)
    assert diag.t < 0 and diag.guard is None
    with pytest.raises(ClipmergeError, match="singular"):
        model_stock([torch.tensor([1.0, 0, 0]), torch.tensor([-1.0, 0, 0])], w0, clamp_negative=False)


def test_frozen_tensor_gives_the_anchor_and_is_reported():
    w0 = torch.randn(4, 4)
    merged, diag = model_stock([w0.clone(), w0.clone(), w0.clone()], w0)
    assert diag.guard == "zero_delta" and diag.t == 0.0
    assert torch.equal(merged, w0)


def test_one_zero_delta_among_two_discards_the_other_update():
    w0 = torch.randn(8)
    merged, diag = model_stock([w0.clone(), w0 + 1.0], w0)
    assert diag.guard == "zero_delta" and diag.t == 0.0
    assert torch.equal(merged, w0)


def test_integer_buffers_come_from_the_anchor():
    w0 = torch.arange(6)
    merged, diag = model_stock([w0 + 1, w0 + 2], w0)
    assert torch.equal(merged, w0) and diag.guard == "non_float" and diag.t is None


def test_scratch_buffer_gives_the_same_bits_and_wrong_scratch_is_ignored():
    w0 = torch.randn(6, 5)
    ws = [w0 + torch.randn(6, 5) + 1 for _ in range(3)]
    plain, diag = model_stock(ws, w0)
    for scratch in (torch.full((100,), float("nan")), torch.empty(10), torch.empty(100, dtype=torch.float64)):
        merged, scratch_diag = model_stock(ws, w0, scratch=scratch)
        assert torch.equal(merged, plain) and scratch_diag == diag


class _Columns(list):
    """Inputs that can be read block of columns by block (the streaming driver's column)."""

    def read_columns(self, start, rows):
        for w, row in zip(self, rows, strict=True):
            row.copy_(w.reshape(-1)[start:start + rows.shape[1]])
        return rows


@pytest.mark.parametrize("path", ["rows", "scratch", "blocked"])
def test_norms_are_each_deltas_l2_norm_and_the_merge_is_unchanged(path):
    """``norms`` (from the Gram diagonal) equal torch.linalg.norm of each delta, in input order, on every
    path; the merged tensor is the one the arithmetic gives, bit for bit (norms only read the Gram)."""
    g = torch.Generator().manual_seed(7)
    w0 = torch.randn(40, 25, generator=g)
    shared = 0.05 * torch.randn(40, 25, generator=g)
    ws = [w0 + shared + scale * torch.randn(40, 25, generator=g) for scale in (0.01, 0.03, 0.1)]
    ws.append(w0.clone())  # a zero delta: norm 0
    n, numel = len(ws), w0.numel()
    scratch = {"rows": None, "scratch": torch.empty(n * numel), "blocked": torch.empty(n * 300)}[path]
    merged, diag = model_stock(_Columns(w.clone() for w in ws), w0, scratch=scratch)
    expected = [float(torch.linalg.norm((w - w0).double())) for w in ws]
    assert len(diag.norms) == n and diag.norms[-1] == 0.0 and diag.guard == "zero_delta"
    assert list(diag.norms) == pytest.approx(expected, rel=1e-5)
    assert diag.to_json()["norms"] == list(diag.norms)
    # The merge, step by step as model_stock computes it (float32, deltas summed over the inputs).
    deltas = torch.stack([w.reshape(-1) for w in ws]) - w0.reshape(-1)
    w_avg = deltas.sum(dim=0).div_(n).add_(w0.reshape(-1))
    assert torch.equal(merged, w_avg.mul_(diag.t).add_(w0.reshape(-1), alpha=1.0 - diag.t).reshape(w0.shape))


def test_a_non_float_tensor_has_no_norms():
    _, diag = model_stock([torch.arange(3) + 1, torch.arange(3) + 2], torch.arange(3))
    assert diag.norms is None and diag.to_json()["norms"] is None


@pytest.mark.parametrize("n", [2, 3, 9, 32])
def test_merge_matches_the_formula_in_float64(n):
    """The float32 merge (deltas made in place in the scratch rows) against the paper's formula
    evaluated independently in float64."""
    g = torch.Generator().manual_seed(n)
    w0 = torch.randn(1000, generator=g)
    shared = 0.01 * torch.randn(1000, generator=g)  # a common direction: positive cosines, 0 < t < 1
    ws = [w0 + shared + 0.01 * torch.randn(1000, generator=g) for _ in range(n)]
    merged, diag = model_stock(ws, w0, scratch=torch.empty(n * 1000))
    deltas = torch.stack(ws).double() - w0.double()
    unit = deltas / deltas.norm(dim=1, keepdim=True)
    i, j = torch.triu_indices(n, n, offset=1)
    cos = math.cos(float(torch.arccos((unit @ unit.T)[i, j].clamp(-1, 1)).mean()))
    t = n * cos / (1 + (n - 1) * cos)
    expected = t * torch.stack(ws).double().mean(0) + (1 - t) * w0.double()
    assert 0.1 < t < 1 and diag.t == pytest.approx(t, rel=1e-5)
    torch.testing.assert_close(merged.double(), expected, rtol=0, atol=1e-5)


def test_overflowing_deltas_are_an_error_not_a_silent_nan():
    with pytest.raises(ClipmergeError, match="overflow"):
        model_stock([torch.full((4,), 1e30), torch.full((4,), 2e30)], torch.zeros(4))


def test_rejects_fewer_than_two_models_and_unknown_average():
    with pytest.raises(ClipmergeError, match="at least 2"):
        model_stock([torch.ones(2)], torch.zeros(2))
    with pytest.raises(ClipmergeError, match="average"):
        model_stock([torch.ones(2), torch.ones(2)], torch.zeros(2), average="max")


def test_half_precision_is_merged_in_float32_and_cast_back():
    w0 = torch.randn(256)
    half = [(w0 + 1e-2 * torch.randn(256) + 1e-2).half() for _ in range(3)]
    merged, diag = model_stock(half, w0.half())
    ref, ref_diag = model_stock([w.float() for w in half], w0.half().float())
    assert merged.dtype == torch.float16
    assert diag.t == ref_diag.t
    assert torch.equal(merged, ref.half())


def _random_case(seed: int, n: int, numel: int, spread: float):
    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(numel, generator=g)
    shared = torch.randn(numel, generator=g) * spread
    return w0, [w0 + shared + torch.randn(numel, generator=g) for _ in range(n)]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1), n=st.integers(2, 6), numel=st.integers(1, 40),
    spread=st.floats(0.0, 3.0), average=st.sampled_from(["angles", "cosines"]),
)
def test_property_t_in_unit_interval_and_result_between_anchor_and_average(seed, n, numel, spread, average):
    w0, ws = _random_case(seed, n, numel, spread)
    merged, diag = model_stock(ws, w0, average=average)
    assert 0.0 <= diag.t <= 1.0 + 1e-6
    assert 0.0 <= diag.cos <= 1.0
    w_avg = torch.stack(ws).mean(0)
    torch.testing.assert_close(merged, w0 + diag.t * (w_avg - w0), atol=1e-5, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 6), numel=st.integers(2, 40), data=st.data())
def test_property_permuting_inputs_does_not_change_the_merge(seed, n, numel, data):
    w0, ws = _random_case(seed, n, numel, 1.0)
    order = data.draw(st.permutations(range(n)))
    a, da = model_stock(ws, w0)
    b, db = model_stock([ws[i] for i in order], w0)
    assert da.t == pytest.approx(db.t, abs=1e-5)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1), n=st.integers(2, 4),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]),
)
def test_property_dtype_and_shape_are_preserved(seed, n, dtype):
    w0, ws = _random_case(seed, n, 12, 1.0)
    merged, _ = model_stock([w.reshape(3, 4).to(dtype) for w in ws], w0.reshape(3, 4).to(dtype))
    assert merged.dtype == dtype and merged.shape == (3, 4)
    assert torch.isfinite(merged).all()
