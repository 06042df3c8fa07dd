"""The streaming merge driver: identical to an in-memory merge, validates first, never clobbers output."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from clipmerge.errors import ClipmergeError
from clipmerge.merging.driver import merge_checkpoints
from clipmerge.merging.model_stock import model_stock
from clipmerge.merging.uniform_soup import uniform_soup
from clipmerge.merging.wise_ft import wise_ft

METADATA = {"format": "clipmerge-classifier-v1", "arch": "clipmerge-tiny", "num_classes": "3"}


def random_state(seed: int, base: dict | None = None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = {"visual.proj": (8, 4), "visual.ln.weight": (8,), "head.weight": (3, 4), "head.bias": (3,)}
    state = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    if base is not None:  # a "fine-tune" of base: small moves with a shared direction, one tensor frozen
        shared = torch.Generator().manual_seed(99)
        state = {k: base[k] + 0.1 * (v + torch.randn(v.shape, generator=shared)) for k, v in state.items()}
        state["visual.ln.weight"] = base["visual.ln.weight"].clone()
    state["visual.half"] = torch.randn(5, generator=g).half()
    state["num_batches"] = torch.tensor(seed)
    return state


@pytest.fixture
def checkpoints(tmp_path):
    zs = random_state(0)
    fts = [random_state(seed, base=zs) for seed in (1, 2, 3)]
    paths = []
    for name, state in [("zs", zs), ("ft1", fts[0]), ("ft2", fts[1]), ("ft3", fts[2])]:
        (tmp_path / name).mkdir()
        save_file(state, tmp_path / name / "model.safetensors", metadata=METADATA)
        paths.append(tmp_path / name / "model.safetensors")
    return zs, fts, paths[0], paths[1:]


def assert_same_bits(path, expected: dict[str, torch.Tensor]):
    loaded = load_file(path)
    assert loaded.keys() == expected.keys()
    for key, tensor in expected.items():
        assert loaded[key].dtype == tensor.dtype, key
        assert loaded[key].numpy().tobytes() == tensor.numpy().tobytes(), key


def test_model_stock_streamed_equals_in_memory(checkpoints, tmp_path):
    zs, fts, zs_path, ft_paths = checkpoints
    out = tmp_path / "ms" / "model.safetensors"
    report = merge_checkpoints("model_stock", ft_paths, out, anchor=zs_path)
    expected, diagnostics = {}, {}
    for key in zs:
        expected[key], diagnostics[key] = model_stock([ft[key] for ft in fts], zs[key])
    assert_same_bits(out, expected)
    assert report.tensors == diagnostics
    assert report.tensors["visual.ln.weight"].guard == "zero_delta"
    assert torch.equal(load_file(out)["visual.ln.weight"], zs["visual.ln.weight"])
    assert report.tensors["num_batches"].guard == "non_float"
    assert report.layout.metadata == METADATA
    summary = report.to_json()["summary"]
    assert summary["guarded"] == {"non_float": ["num_batches"], "zero_delta": ["visual.ln.weight"]}
    assert summary["t_min"] == 0.0 < summary["t_max"] <= 1  # 0 for the frozen tensor


def test_uniform_soup_and_wise_ft_streamed_equal_in_memory(checkpoints, tmp_path):
    zs, fts, zs_path, ft_paths = checkpoints
    merge_checkpoints("uniform_soup", ft_paths, tmp_path / "u.safetensors")
    assert_same_bits(tmp_path / "u.safetensors", {k: uniform_soup([ft[k] for ft in fts]) for k in zs})
    report = merge_checkpoints("wise_ft", ft_paths[:1], tmp_path / "w.safetensors", anchor=zs_path,
                               options={"alpha": 0.3})
    assert_same_bits(tmp_path / "w.safetensors", {k: wise_ft(zs[k], fts[0][k], 0.3) for k in zs})
    assert report.to_json() == {"method": "wise_ft", "options": {"alpha": 0.3}, "n_tensors": len(zs)}


def test_output_metadata_is_the_inputs(checkpoints, tmp_path):
    from clipmerge.weights.streaming import read_layout

    _, _, zs_path, ft_paths = checkpoints
    merge_checkpoints("uniform_soup", ft_paths, tmp_path / "u.safetensors")
    assert read_layout(tmp_path / "u.safetensors").metadata == METADATA


@pytest.mark.parametrize(
    "method, n_inputs, anchor, options, message",
    [
        ("model_stock", 1, True, {}, "needs 2..N input"),
        ("model_stock", 2, False, {}, "needs an anchor"),
        ("uniform_soup", 2, True, {}, "does not use an anchor"),
        ("wise_ft", 2, True, {"alpha": 0.5}, "needs 1..1 input"),
        ("wise_ft", 1, True, {}, "bad options"),
        ("model_stock", 2, True, {"alpha": 0.5}, "bad options"),
        ("greedy_soup", 2, False, {}, "greedy-soup"),
        ("breadcrumbs", 2, False, {}, "unknown merge method"),
        ("slerp", 3, True, {}, "needs 2..2 input"),
        ("slerp", 1, True, {}, "needs 2..2 input"),
        ("ties", 2, False, {}, "needs an anchor"),
        ("ties", 2, True, {"alpha": 0.5}, "bad options"),
        ("dare", 2, True, {"key": "visual.proj"}, "'key' is no option"),
        ("dare", 2, True, {"drop_rate": 1.0}, "drop_rate must be in"),
    ],
)
def test_call_errors_are_raised_before_writing(checkpoints, tmp_path, method, n_inputs, anchor, options, message):
    _, _, zs_path, ft_paths = checkpoints
    out = tmp_path / "out.safetensors"
    with pytest.raises(ClipmergeError, match=message):
        merge_checkpoints(method, ft_paths[:n_inputs], out, anchor=zs_path if anchor else None, options=options)
    assert not out.exists()


def test_refuses_to_overwrite_an_input(checkpoints):
    _, _, zs_path, ft_paths = checkpoints
    with pytest.raises(ClipmergeError, match="also an input"):
        merge_checkpoints("uniform_soup", ft_paths, ft_paths[0])


def test_mismatch_names_tensor_and_both_files_and_keeps_old_output(checkpoints, tmp_path):
    zs, fts, zs_path, ft_paths = checkpoints
    bad = dict(fts[1], **{"head.bias": torch.zeros(4)})
    save_file(bad, ft_paths[1], metadata=METADATA)
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"old result")
    with pytest.raises(ClipmergeError, match=r"'head.bias': .*ft1/model.safetensors has shape \[3\].*ft2/model"):
        merge_checkpoints("model_stock", ft_paths, out, anchor=zs_path)
    assert out.read_bytes() == b"old result"


def poison(checkpoints, index: int, position: tuple[int, int], value: float) -> None:
    """Rewrite fine-tune ``index`` with ``value`` at ``position`` of its late tensor ``visual.proj``."""
    _, fts, _, ft_paths = checkpoints
    poisoned = dict(fts[index])
    poisoned["visual.proj"] = poisoned["visual.proj"].clone()
    poisoned["visual.proj"][position] = value
    save_file(poisoned, ft_paths[index], metadata=METADATA)


def test_nan_in_a_late_tensor_aborts_without_touching_output(checkpoints, tmp_path):
    zs, fts, zs_path, ft_paths = checkpoints
    poison(checkpoints, 2, (3, 1), float("nan"))
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"old result")
    with pytest.raises(ClipmergeError, match=r"ft3/model.safetensors: tensor 'visual.proj' has 1 NaN"):
        merge_checkpoints("uniform_soup", ft_paths, out)
    assert out.read_bytes() == b"old result"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["out.safetensors"]


def test_nan_read_straight_into_model_stocks_buffer_still_names_the_file(checkpoints, tmp_path):
    """Model Stock's inputs are read into its buffer unchecked; a NaN still stops it, naming the file."""
    zs, fts, zs_path, ft_paths = checkpoints
    poison(checkpoints, 1, (0, 2), float("inf"))
    out = tmp_path / "out.safetensors"
    with pytest.raises(ClipmergeError, match=r"ft2/model.safetensors: tensor 'visual.proj' has .*inf"):
        merge_checkpoints("model_stock", ft_paths, out, anchor=zs_path)
    assert not out.exists()


def test_method_error_names_the_tensor(checkpoints, tmp_path):
    zs, fts, zs_path, ft_paths = checkpoints
    flipped = {k: (2 * zs[k] - v if v.is_floating_point() else v) for k, v in fts[0].items()}
    save_file(flipped, ft_paths[1], metadata=METADATA)  # ft2 = mirror image of ft1 around w0: cos = -1
    with pytest.raises(ClipmergeError, match=r"tensor 'head.bias': model_stock: .*singular"):
        merge_checkpoints("model_stock", ft_paths[:2], tmp_path / "o.safetensors", anchor=zs_path,
                          options={"clamp_negative": False})


@pytest.mark.parametrize("scratch_bytes", [4 * 3 * 5, 4 * 3 * 1])  # blocks of 5 columns; of 1 column
def test_model_stock_over_blocks_matches_the_whole_tensor_merge(checkpoints, tmp_path, monkeypatch, scratch_bytes):
    """A scratch smaller than a tensor's N rows merges it block of columns by block: same ratios and
    weights up to float rounding (the Gram matrix is summed in another order), and a NaN is still found."""
    from clipmerge.merging import driver

    zs, fts, zs_path, ft_paths = checkpoints
    whole = merge_checkpoints("model_stock", ft_paths, tmp_path / "whole.safetensors", anchor=zs_path)
    monkeypatch.setattr(driver, "SCRATCH_BYTES", scratch_bytes)
    blocked = merge_checkpoints("model_stock", ft_paths, tmp_path / "blocked.safetensors", anchor=zs_path)
    for key, expected in load_file(tmp_path / "whole.safetensors").items():
        assert torch.allclose(load_file(tmp_path / "blocked.safetensors")[key].float(), expected.float(),
                              rtol=1e-5, atol=1e-6), key
        if whole.tensors[key].t is not None:
            assert blocked.tensors[key].t == pytest.approx(whole.tensors[key].t, rel=1e-6)
    poison(checkpoints, 1, (0, 2), float("nan"))
    with pytest.raises(ClipmergeError, match=r"ft2/model.safetensors: tensor 'visual.proj' has 1 NaN"):
        merge_checkpoints("model_stock", ft_paths, tmp_path / "nan.safetensors", anchor=zs_path)
