"""Task arithmetic, TIES, DARE, DARE-TIES and SLERP per tensor and through the streaming driver.

Expected values are worked out by hand (tiny explicit numbers) or recomputed here independently in
float64 with numpy and plain loops, from the formulas the modules document, never with their helpers.
"""

import hashlib
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from clipmerge.errors import ClipmergeError
from clipmerge.merging.dare import dare
from clipmerge.merging.dare_ties import dare_ties
from clipmerge.merging.driver import merge_checkpoints
from clipmerge.merging.registry import get
from clipmerge.merging.slerp import slerp
from clipmerge.merging.task_arithmetic import task_arithmetic
from clipmerge.merging.ties import ties

# Three task vectors of six elements with sign conflicts, a tie in magnitude (|-2| = |2| in tau1) and a
# small element every trim drops.
TAUS = [
    [4.0, -1.0, 0.5, 3.0, -2.0, 2.0],
    [-3.0, 2.0, -0.1, 1.0, -5.0, 4.0],
    [1.0, -6.0, 0.2, -2.0, 0.3, 5.0],
]


def finetunes(w0: torch.Tensor, taus) -> list[torch.Tensor]:
    return [w0 + torch.tensor(t, dtype=w0.dtype) for t in taus]


# --- independent float64 references ----------------------------------------------------------------

def ref_trim(tau: np.ndarray, k: int) -> np.ndarray:
    """Keep every element whose magnitude is >= the k-th largest magnitude (plain sort)."""
    threshold = sorted(np.abs(tau).tolist(), reverse=True)[k - 1]
    return np.array([v if abs(v) >= threshold else 0.0 for v in tau])


def ref_disjoint_mean(vectors: list[np.ndarray]) -> np.ndarray:
    def sign(x: float) -> int:
        return (x > 0) - (x < 0)

    out = np.zeros_like(vectors[0])
    for p in range(len(out)):
        elected = sign(float(sum(float(v[p]) for v in vectors)))
        agreeing = [float(v[p]) for v in vectors if v[p] != 0 and sign(float(v[p])) == elected]
        out[p] = sum(agreeing) / len(agreeing) if agreeing else 0.0
    return out


def ref_dare_keep(mask_seed: int, key: str, index: int, numel: int, drop_rate: float) -> np.ndarray:
    """The documented mask: a torch.Generator seeded with sha256("clipmerge-dare", seed, key, index)'s
    first 8 bytes (little endian), float32 draws u, kept where u >= drop_rate."""
    digest = hashlib.sha256(f"clipmerge-dare\0{mask_seed}\0{key}\0{index}".encode()).digest()
    g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
    draws = torch.rand(numel, generator=g, dtype=torch.float32).numpy()
    return draws >= np.float32(drop_rate)


def ref_slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    if abs(cos) > 0.9995:
        return (1 - t) * a + t * b
    theta = math.acos(cos)
    return math.sin((1 - t) * theta) / math.sin(theta) * a + math.sin(t * theta) / math.sin(theta) * b


def random_case(seed: int, n: int, numel: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(numel, generator=g, dtype=torch.float64)
    ws = [w0 + 0.1 * torch.randn(numel, generator=g, dtype=torch.float64) for _ in range(n)]
    return w0.to(dtype), [w.to(dtype) for w in ws]


# --- task arithmetic --------------------------------------------------------------------------------

def test_task_arithmetic_by_hand():
    w0 = torch.tensor([1.0, 2.0, 3.0])
    w1, w2 = torch.tensor([2.0, 2.0, 1.0]), torch.tensor([1.0, 4.0, 3.0])  # tau = [1, 0, -2], [0, 2, 0]
    assert torch.equal(task_arithmetic([w1, w2], w0, scale=0.5), torch.tensor([1.5, 3.0, 2.0]))
    # the default lambda is 0.3: w0 + 0.3 * [1, 2, -2]
    torch.testing.assert_close(task_arithmetic([w1, w2], w0), torch.tensor([1.3, 2.6, 2.4]))
    assert torch.equal(task_arithmetic([w1, w2], w0, scale=0.0), w0)


def test_task_arithmetic_with_scale_one_over_n_is_the_uniform_soup():
    w0, ws = random_case(0, 4, 50, torch.float32)
    torch.testing.assert_close(task_arithmetic(ws, w0, scale=0.25), torch.stack(ws).mean(0))


def test_task_arithmetic_matches_float64_loop_and_keeps_dtypes():
    w0, ws = random_case(1, 3, 40)
    expected = w0.numpy() + 0.7 * sum(w.numpy() - w0.numpy() for w in ws)
    np.testing.assert_allclose(task_arithmetic(ws, w0, scale=0.7).numpy(), expected, rtol=0, atol=1e-12)
    half = task_arithmetic([w.half() for w in ws], w0.half(), scale=0.7)
    assert half.dtype == torch.float16
    buffers = [torch.arange(3), torch.arange(3) + 4]
    assert torch.equal(task_arithmetic(buffers, torch.arange(3) + 9), torch.arange(3) + 9)


# --- TIES -------------------------------------------------------------------------------------------

def test_ties_by_hand_with_trimming_sign_conflicts_and_a_tie_at_the_threshold():
    # density 0.5 of 6 elements: k = 3 per vector.
    #   tau1 keeps 4, 3 and both |2| (tied at the 3rd magnitude): [4, 0, 0, 3, -2, 2]
    #   tau2 keeps -5, 4, -3:                                      [-3, 0, 0, 0, -5, 4]
    #   tau3 keeps -6, 5, -2:                                      [0, -6, 0, -2, 0, 5]
    # sums [1, -6, 0, 1, -7, 11] elect [+, -, 0, +, -, +]; agreeing means:
    #   4 | -6 | nothing (w0) | 3 (tau3's -2 disagrees) | (-2 - 5)/2 | (2 + 4 + 5)/3
    expected = torch.tensor([4.0, -6.0, 0.0, 3.0, -3.5, 11.0 / 3.0])
    w0 = torch.zeros(6)
    torch.testing.assert_close(ties(finetunes(w0, TAUS), w0, density=0.5), expected, rtol=0, atol=1e-6)
    w0 = torch.tensor([10.0, -1.0, 0.5, 2.0, 3.0, -7.0])
    torch.testing.assert_close(ties(finetunes(w0, TAUS), w0, density=0.5, scale=2.0), w0 + 2 * expected,
                               rtol=0, atol=1e-5)


def test_ties_without_trimming_elects_and_averages():
    # density 1: sums [2, -5, 0.6, 2, -6.7, 11] -> means (4+1)/2, (-1-6)/2, (0.5+0.2)/2, (3+1)/2, (-2-5)/2, 11/3
    w0 = torch.zeros(6)
    expected = torch.tensor([2.5, -3.5, 0.35, 2.0, -3.5, 11.0 / 3.0])
    torch.testing.assert_close(ties(finetunes(w0, TAUS), w0, density=1.0), expected, rtol=0, atol=1e-6)


def test_ties_zero_election_keeps_the_anchor():
    w0 = torch.tensor([1.0, 1.0])
    merged = ties([torch.tensor([3.0, 2.0]), torch.tensor([-1.0, 2.0])], w0, density=1.0)  # taus [2, 1], [-2, 1]
    assert torch.equal(merged, torch.tensor([1.0, 2.0]))  # +2 and -2 cancel: w0; then mean(1, 1)


def test_ties_keeps_ceil_of_density_times_numel():
    w0 = torch.zeros(3)
    w = torch.tensor([1.0, -3.0, 2.0])
    assert torch.equal(ties([w], w0, density=0.2), torch.tensor([0.0, -3.0, 0.0]))  # ceil(0.6) = 1
    assert torch.equal(ties([w], w0, density=0.5), torch.tensor([0.0, -3.0, 2.0]))  # ceil(1.5) = 2
    w0, w = torch.zeros(10), torch.arange(1.0, 11.0)
    # 0.7 * 10 = 7.000000000000001 in floating point: still k = 7, the three smallest dropped
    assert torch.equal(ties([w], w0, density=0.7), torch.cat([torch.zeros(3), torch.arange(4.0, 11.0)]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ties_matches_an_independent_float64_computation(seed):
    w0, ws = random_case(seed, 4, 60)
    taus = [w.numpy() - w0.numpy() for w in ws]
    expected = w0.numpy() + 1.3 * ref_disjoint_mean([ref_trim(t, 15) for t in taus])  # 0.25 * 60 = 15
    np.testing.assert_allclose(ties(ws, w0, density=0.25, scale=1.3).numpy(), expected, rtol=0, atol=1e-12)
    f32 = ties([w.float() for w in ws], w0.float(), density=0.25, scale=1.3)
    assert f32.dtype == torch.float32
    np.testing.assert_allclose(f32.numpy(), expected, rtol=0, atol=1e-5)


def test_ties_reads_each_input_once():
    w0, ws = random_case(0, 3, 10)
    assert torch.equal(ties((w for w in ws), w0), ties(ws, w0))  # a generator: one pass


# --- DARE -------------------------------------------------------------------------------------------

def test_dare_masks_are_deterministic_per_seed_key_and_input():
    w0, w1 = torch.zeros(1000), torch.ones(1000)
    a = dare([w1], w0, key="visual.proj")
    assert torch.equal(a, dare([w1], w0, key="visual.proj"))  # same seed and key: same mask
    assert not torch.equal(a, dare([w1], w0, key="visual.ln.weight"))  # another key: another mask
    assert not torch.equal(a, dare([w1], w0, key="visual.proj", mask_seed=1))  # another seed
    second = dare([w1, w1], w0, key="visual.proj") - a  # input 1 has a mask of its own
    assert set(second.round().unique().tolist()) == {0.0, 10.0}
    assert not torch.equal(second != 0, a != 0)


def test_dare_matches_the_documented_masks_in_float64():
    w0, ws = random_case(3, 3, 200)
    expected = w0.numpy().copy()
    for i, w in enumerate(ws):
        keep = ref_dare_keep(5, "head.weight", i, 200, 0.7)
        expected += 0.8 * np.where(keep, (w.numpy() - w0.numpy()) / (1 - 0.7), 0.0)
    merged = dare(ws, w0, key="head.weight", drop_rate=0.7, scale=0.8, mask_seed=5)
    np.testing.assert_allclose(merged.numpy(), expected, rtol=0, atol=1e-12)
    # the mask is drawn in float32 whatever the dtype: a float32 merge drops the same elements
    f32 = dare([w.float() for w in ws[:1]], w0.float(), key="head.weight", drop_rate=0.7, mask_seed=5)
    assert torch.equal(f32 != w0.float(), torch.from_numpy(ref_dare_keep(5, "head.weight", 0, 200, 0.7)))


def test_dare_drops_about_p_and_preserves_the_expectation():
    numel, p = 200_000, 0.9
    w0, w1 = torch.zeros(numel), torch.full((numel,), 0.5)
    merged = dare([w1], w0, key="big", drop_rate=p)
    dropped = float((merged == 0).float().mean())
    assert abs(dropped - p) < 0.005  # the binomial's sd is 0.0007
    torch.testing.assert_close(merged[merged != 0], torch.full_like(merged[merged != 0], 0.5 / (1 - p)))
    assert abs(float(merged.mean()) - 0.5) < 0.02  # E = tau; sd of the mean 0.5 * 3 / sqrt(n) = 0.0034


def test_dare_without_dropping_is_task_arithmetic():
    w0, ws = random_case(4, 3, 64, torch.float32)
    assert torch.equal(dare(ws, w0, key="k", drop_rate=0.0, scale=0.4), task_arithmetic(ws, w0, scale=0.4))


# --- DARE-TIES --------------------------------------------------------------------------------------

def test_dare_ties_matches_an_independent_float64_computation():
    w0, ws = random_case(5, 3, 300)
    sparse = [np.where(ref_dare_keep(2, "visual.proj", i, 300, 0.5), (w.numpy() - w0.numpy()) / 0.5, 0.0)
              for i, w in enumerate(ws)]
    expected = w0.numpy() + 0.9 * ref_disjoint_mean(sparse)
    merged = dare_ties(ws, w0, key="visual.proj", drop_rate=0.5, scale=0.9, mask_seed=2)
    np.testing.assert_allclose(merged.numpy(), expected, rtol=0, atol=1e-12)


def test_dare_ties_of_one_input_is_dare_and_without_dropping_is_untrimmed_ties():
    w0, ws = random_case(6, 3, 50, torch.float32)
    assert torch.equal(dare_ties(ws[:1], w0, key="k"), dare(ws[:1], w0, key="k"))
    w0 = torch.zeros(6)
    expected = torch.tensor([2.5, -3.5, 0.35, 2.0, -3.5, 11.0 / 3.0])  # as the density-1 TIES example
    torch.testing.assert_close(dare_ties(finetunes(w0, TAUS), w0, key="k", drop_rate=0.0), expected,
                               rtol=0, atol=1e-6)


# --- SLERP ------------------------------------------------------------------------------------------

def test_slerp_of_orthogonal_unit_task_vectors_at_half_is_unit_norm_at_45_degrees():
    w0 = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
    e1, e2 = torch.eye(4, dtype=torch.float64)[:2]
    merged, diag = slerp([w0 + e1, w0 + e2], w0, t=0.5)
    tau = merged - w0
    assert float(tau.norm()) == pytest.approx(1.0, abs=1e-12)
    for e in (e1, e2):
        assert math.degrees(math.acos(float(tau @ e))) == pytest.approx(45.0, abs=1e-9)
    assert diag.angle_deg == pytest.approx(90.0) and diag.cos == pytest.approx(0.0, abs=1e-15)
    assert diag.t == 0.5 and diag.guard is None


def test_slerp_falls_back_to_lerp_for_parallel_and_zero_vectors():
    w0 = torch.tensor([1.0, 2.0, 3.0])
    tau = torch.tensor([0.5, -1.0, 2.0])
    merged, diag = slerp([w0 + tau, w0 + 2 * tau], w0, t=0.25)
    torch.testing.assert_close(merged, w0 + 0.75 * tau + 0.25 * 2 * tau)
    assert diag.guard == "parallel" and diag.cos == pytest.approx(1.0)
    merged, diag = slerp([w0 + tau, w0 - 3 * tau], w0, t=0.5)  # anti-parallel
    torch.testing.assert_close(merged, w0 - tau)
    assert diag.guard == "parallel"
    merged, diag = slerp([w0.clone(), w0 + tau], w0, t=0.5)  # a tensor the first fine-tune did not move
    torch.testing.assert_close(merged, w0 + 0.5 * tau)
    assert diag.guard == "zero_delta" and diag.angle_deg == 90.0


def test_slerp_ends_are_the_fine_tunes():
    w0, (w1, w2) = random_case(7, 2, 30, torch.float32)
    torch.testing.assert_close(slerp([w1, w2], w0, t=0.0)[0], w1)
    torch.testing.assert_close(slerp([w1, w2], w0, t=1.0)[0], w2)
    assert torch.equal(slerp([w1, w2], w0, t=0.0, space="weights")[0], w1)
    assert torch.equal(slerp([w1, w2], w0, t=1.0, space="weights")[0], w2)


@pytest.mark.parametrize("t", [0.3, 0.5, 0.8])
def test_slerp_matches_an_independent_float64_computation(t):
    w0, (w1, w2) = random_case(8, 2, 40)
    a, b, z = w1.numpy(), w2.numpy(), w0.numpy()
    merged, diag = slerp([w1, w2], w0, t=t)
    np.testing.assert_allclose(merged.numpy(), z + ref_slerp(a - z, b - z, t), rtol=0, atol=1e-12)
    cos = (a - z) @ (b - z) / (np.linalg.norm(a - z) * np.linalg.norm(b - z))
    assert diag.cos == pytest.approx(cos, abs=1e-12)
    weights, diag = slerp([w1, w2], w0, t=t, space="weights")  # fine-tunes of one model: nearly parallel
    np.testing.assert_allclose(weights.numpy(), ref_slerp(a, b, t), rtol=0, atol=1e-12)


def test_slerp_takes_exactly_two_and_copies_integer_buffers():
    w0, ws = random_case(9, 3, 5)
    with pytest.raises(ClipmergeError, match="exactly 2"):
        slerp(ws, w0)
    merged, diag = slerp([torch.arange(3), torch.arange(3) + 1], torch.arange(3) + 7)
    assert torch.equal(merged, torch.arange(3) + 7) and diag.guard == "non_float"


# --- options ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, options, name", [
    ("ties", {"density": 0.0}, "density"),
    ("ties", {"density": 1.5}, "density"),
    ("ties", {"density": float("nan")}, "density"),
    ("ties", {"scale": float("inf")}, "scale"),
    ("task_arithmetic", {"scale": "1"}, "scale"),
    ("dare", {"drop_rate": 1.0}, "drop_rate"),
    ("dare", {"drop_rate": -0.1}, "drop_rate"),
    ("dare", {"mask_seed": -1}, "mask_seed"),
    ("dare_ties", {"drop_rate": 1.0}, "drop_rate"),
    ("slerp", {"t": -0.1}, "t must"),
    ("slerp", {"t": 1.1}, "t must"),
    ("slerp", {"space": "angles"}, "space"),
])
def test_bad_options_name_the_option(method, options, name):
    with pytest.raises(ClipmergeError, match=f"{method}: {name}"):
        get(method).check_options(options)
    w0, ws = random_case(0, 2, 4)
    key = {"key": "k"} if get(method).needs_key else {}
    with pytest.raises(ClipmergeError, match=f"{method}: {name}"):
        get(method).merge_tensor(ws, w0, **options, **key)


# --- through the streaming driver -------------------------------------------------------------------

METADATA = {"format": "clipmerge-classifier-v1", "arch": "clipmerge-tiny", "num_classes": "3"}
SHAPES = {"visual.proj": (8, 4), "visual.twin": (8, 4), "head.weight": (3, 4), "head.bias": (3,)}


@pytest.fixture
def checkpoints(tmp_path):
    """zero-shot + 3 fine-tunes; visual.twin holds the same values as visual.proj in every file."""
    g = torch.Generator().manual_seed(0)
    zs = {k: torch.randn(s, generator=g) for k, s in SHAPES.items()}
    zs["visual.twin"] = zs["visual.proj"].clone()
    zs["visual.half"] = torch.randn(5, generator=g).half()
    zs["num_batches"] = torch.tensor(7)
    states = [zs]
    for seed in (1, 2, 3):
        state = {k: v + 0.1 * torch.randn(v.shape, generator=g).to(v.dtype) if v.is_floating_point() else v + seed
                 for k, v in zs.items()}
        state["visual.twin"] = state["visual.proj"].clone()
        states.append(state)
    paths = []
    for name, state in zip(("zs", "ft1", "ft2", "ft3"), states, strict=True):
        save_file(state, tmp_path / f"{name}.safetensors", metadata=METADATA)
        paths.append(tmp_path / f"{name}.safetensors")
    return states[0], states[1:], paths[0], paths[1:]


@pytest.mark.parametrize("method, options, n", [
    ("task_arithmetic", {"scale": 0.3}, 3), ("ties", {"density": 0.2, "scale": 1.0}, 3),
    ("dare", {"drop_rate": 0.9, "scale": 1.0, "mask_seed": 0}, 3),
    ("dare_ties", {"drop_rate": 0.5, "scale": 1.0, "mask_seed": 3}, 3),
    ("slerp", {"t": 0.5, "space": "task_vectors"}, 2), ("slerp", {"t": 0.3, "space": "weights"}, 2),
])
def test_each_method_streams_to_the_same_checkpoint_as_in_memory(checkpoints, tmp_path, method, options, n):
    zs, fts, zs_path, ft_paths = checkpoints
    out = tmp_path / "out" / "model.safetensors"
    report = merge_checkpoints(method, ft_paths[:n], out, anchor=zs_path, options=options)
    merged = load_file(out)
    assert merged.keys() == zs.keys()
    spec = get(method)
    for key, tensor in merged.items():
        expected, _ = spec.merge_tensor([ft[key] for ft in fts[:n]], zs[key], **options,
                                        **({"key": key} if spec.needs_key else {}))
        assert tensor.dtype == zs[key].dtype and torch.equal(tensor, expected), key
    assert torch.equal(merged["num_batches"], zs["num_batches"])  # integer buffers: the anchor's
    assert report.to_json()["options"] == options
    if method == "slerp":  # per-tensor angles, and the summary merge.json keeps
        assert set(report.tensors) == set(zs) and report.to_json()["summary"]["guarded"]["non_float"] == ["num_batches"]
        assert report.to_json()["summary"]["t_mean"] == pytest.approx(options["t"])
    else:
        assert report.tensors == {} and "summary" not in report.to_json()


def test_the_driver_gives_dare_each_tensors_key(checkpoints, tmp_path):
    zs, fts, zs_path, ft_paths = checkpoints
    merge_checkpoints("dare", ft_paths, tmp_path / "d.safetensors", anchor=zs_path,
                      options={"drop_rate": 0.5, "scale": 1.0, "mask_seed": 0})
    merged = load_file(tmp_path / "d.safetensors")
    # visual.proj and visual.twin hold the same values in every input but are masked differently...
    assert not torch.equal(merged["visual.proj"], merged["visual.twin"])
    # ... each by its own key: recomputed here from the documented masks
    for key in ("visual.proj", "visual.twin"):
        expected = zs[key].double().numpy().reshape(-1).copy()
        for i, ft in enumerate(fts):
            tau = (ft[key].reshape(-1) - zs[key].reshape(-1)).double().numpy()
            expected += np.where(ref_dare_keep(0, key, i, tau.size, 0.5), tau / 0.5, 0.0)
        np.testing.assert_allclose(merged[key].reshape(-1).double().numpy(), expected, rtol=0, atol=1e-5)
    merge_checkpoints("dare", ft_paths, tmp_path / "again.safetensors", anchor=zs_path,
                      options={"drop_rate": 0.5, "scale": 1.0, "mask_seed": 0})
    assert (tmp_path / "again.safetensors").read_bytes() == (tmp_path / "d.safetensors").read_bytes()


def test_the_driver_rejects_bad_options_before_writing(checkpoints, tmp_path):
    _, _, zs_path, ft_paths = checkpoints
    out = tmp_path / "out.safetensors"
    for method, options, message in [
        ("ties", {"density": 1.5}, "ties: density must be in"),
        ("dare_ties", {"drop_rate": 1.0}, "dare_ties: drop_rate must be in"),
        ("slerp", {"t": 2.0}, "slerp: t must be in"),
    ]:
        with pytest.raises(ClipmergeError, match=message):
            merge_checkpoints(method, ft_paths[:2], out, anchor=zs_path, options=options)
    with pytest.raises(ClipmergeError, match="slerp needs 2..2 input"):
        merge_checkpoints("slerp", ft_paths, out, anchor=zs_path)
    assert not out.exists()
