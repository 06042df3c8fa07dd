"""Streaming safetensors I/O: format compatibility, validation errors, atomicity."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from clipmerge.errors import ClipmergeError
from clipmerge.weights.streaming import (
    Layout,
    TensorReader,
    TensorSpec,
    common_layout,
    read_layout,
    write_order,
    write_streaming,
)

METADATA = {"format": "clipmerge-classifier-v1"}


def mixed_tensors():
    return {
        "b": torch.arange(5),
        "a": torch.randn(3, 4),
        "h": torch.randn(2).half(),
        "bf": torch.randn(3).bfloat16(),
        "scalar": torch.tensor(1.5),
        "empty": torch.zeros(0, 3),
        "mask": torch.tensor([True, False]),
    }


def layout_of(tensors, metadata=METADATA):
    return Layout({k: TensorSpec(v.dtype, tuple(v.shape)) for k, v in tensors.items()}, dict(metadata))


def stream(path, tensors, metadata=METADATA):
    layout = layout_of(tensors, metadata)
    write_streaming(path, layout, ((k, tensors[k]) for k in write_order(layout.specs)))


def test_streamed_file_is_byte_identical_to_save_file(tmp_path):
    tensors = mixed_tensors()
    save_file(tensors, tmp_path / "ref.safetensors", metadata=METADATA)
    stream(tmp_path / "out.safetensors", tensors)
    assert (tmp_path / "out.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()


def test_streamed_file_round_trips_with_metadata(tmp_path):
    tensors = mixed_tensors()
    meta = {"z": "1", "arch": "clipmerge-tiny", "num_classes": "10"}
    stream(tmp_path / "out.safetensors", tensors, meta)
    loaded = load_file(tmp_path / "out.safetensors")
    assert loaded.keys() == tensors.keys()
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v)
    layout = read_layout(tmp_path / "out.safetensors")
    assert layout.metadata == meta and layout == layout_of(tensors, meta)


def test_writer_rejects_wrong_order_or_spec_and_leaves_existing_file(tmp_path):
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"previous")
    tensors = {"a": torch.zeros(2), "b": torch.ones(2)}
    layout = layout_of(tensors)
    with pytest.raises(ValueError, match="expected tensor 'a'"):
        write_streaming(out, layout, iter([("b", tensors["b"]), ("a", tensors["a"])]))
    with pytest.raises(ValueError, match="does not match"):
        write_streaming(out, layout, iter([("a", torch.zeros(3)), ("b", tensors["b"])]))
    with pytest.raises(ValueError, match="more tensors"):
        write_streaming(out, layout, iter([("a", tensors["a"]), ("b", tensors["b"]), ("c", tensors["b"])]))
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors"]  # no temp file left


@pytest.fixture
def pair(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({"x": torch.zeros(2, 3), "y": torch.zeros(4)}, a, metadata=METADATA)
    return a, b


@pytest.mark.parametrize(
    "other, expected",
    [
        ({"x": torch.zeros(2, 3), "y": torch.zeros(5)}, r"'y': .*a\.safetensors has shape \[4\].*b\.safetensors"),
        ({"x": torch.zeros(2, 3), "y": torch.zeros(4).half()}, r"tensor 'y': .*dtype F32.*dtype F16"),
        ({"x": torch.zeros(2, 3)}, r"tensor 'y' is in .*a\.safetensors but not in .*b\.safetensors"),
        ({"x": torch.zeros(2, 3), "y": torch.zeros(4), "z": torch.zeros(1)}, r"tensor 'z' is in .*b\.safetensors"),
    ],
)
def test_common_layout_names_tensor_and_both_files(pair, other, expected):
    a, b = pair
    save_file(other, b, metadata=METADATA)
    with pytest.raises(ClipmergeError, match=expected):
        common_layout([a, b])


def test_common_layout_checks_header_metadata(pair):
    a, b = pair
    save_file({"x": torch.zeros(2, 3), "y": torch.zeros(4)}, b, metadata={"format": "other"})
    with pytest.raises(ClipmergeError, match=r"metadata 'format'.*a\.safetensors.*b\.safetensors"):
        common_layout([a, b])


def test_truncated_and_garbage_files_are_named(pair, tmp_path):
    a, _ = pair
    data = a.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-4])
    with pytest.raises(ClipmergeError, match="cut.safetensors.*truncated"):
        read_layout(cut)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ClipmergeError, match="junk.safetensors"):
        read_layout(junk)
    with pytest.raises(ClipmergeError, match="missing.safetensors: checkpoint not found"):
        read_layout(tmp_path / "missing.safetensors")


def test_reader_rejects_non_finite_tensors_naming_file_and_tensor(tmp_path):
    path = tmp_path / "nan.safetensors"
    save_file({"ok": torch.ones(3), "bad": torch.tensor([1.0, float("inf"), float("nan")])}, path)
    with TensorReader(path) as reader:
        assert torch.equal(reader.get("ok"), torch.ones(3))
        with pytest.raises(ClipmergeError, match=r"nan\.safetensors: tensor 'bad' has 2 NaN/inf"):
            reader.get("bad")


def test_save_weights_gives_the_same_bytes_for_the_same_weights(tmp_path):
    """safetensors' save_file orders the header metadata by hash, differently in every call; the same
    weights and metadata must give the same file (results reproduce bit for bit)."""
    from clipmerge.weights.checkpoint import load_weights, save_weights

    tensors = {"w": torch.arange(6.0).reshape(2, 3), "n": torch.arange(4), "b": torch.ones(3, dtype=torch.float16)}
    metadata = {f"key{i}": str(i) for i in range(12)}
    paths = [tmp_path / f"{i}.safetensors" for i in range(4)]
    for i, path in enumerate(paths):
        save_weights(tensors, path, metadata=dict(reversed(metadata.items())) if i % 2 else metadata)
    assert len({p.read_bytes() for p in paths}) == 1
    assert all(torch.equal(v, tensors[k]) for k, v in load_weights(paths[0]).items())
