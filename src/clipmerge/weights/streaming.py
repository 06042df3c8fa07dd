"""Stream safetensors files tensor by tensor, in and out, so a merge holds about one model in memory.

Reading uses ``safe_open(..., backend="pread")``: tensors are copied into ordinary (anonymous) memory
and freed when dropped, instead of mmapped file pages that inflate RSS and stay resident (RSS
would count every mapped page a merge ever read).
Writing emits the header first (all shapes and dtypes are known once the inputs are validated), then
each tensor's bytes in header order, so no output dict is ever built.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from clipmerge.errors import ClipmergeError
from clipmerge.files import atomic_write

# safetensors dtype names -> torch dtypes (the ones a CLIP checkpoint can contain).
DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_READ_ERRORS = (SafetensorError, OSError, ValueError, RuntimeError)
FLUSH_EVERY = 64 << 20  # bytes written between background fdatasyncs of a streamed output


@dataclass(frozen=True)
class TensorSpec:
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        numel = 1
        for size in self.shape:
            numel *= size
        return numel * self.dtype.itemsize


@dataclass(frozen=True)
class Layout:
    """What a safetensors header says: tensor specs by key, and the free-form ``__metadata__``."""

    specs: dict[str, TensorSpec]
    metadata: dict[str, str]


def _open(path: str | os.PathLike):
    if not Path(path).is_file():
        raise ClipmergeError(f"{path}: checkpoint not found")
    try:
        return safe_open(str(path), framework="pt", backend="pread")
    except _READ_ERRORS as e:
        raise ClipmergeError(f"{path}: not a readable safetensors file ({e}); corrupt or truncated?") from e


def read_layout(path: str | os.PathLike) -> Layout:
    """Read only the header of ``path``. safetensors checks here that the data section covers every
    tensor exactly, so a truncated file fails now, before any output is written."""
    with _open(path) as fh:
        specs = {}
        for key in fh.keys():
            sl = fh.get_slice(key)
            dtype = DTYPES.get(sl.get_dtype())
            if dtype is None:
                raise ClipmergeError(f"{path}: tensor {key!r} has unsupported dtype {sl.get_dtype()}")
            specs[key] = TensorSpec(dtype, tuple(sl.get_shape()))
        return Layout(specs, dict(fh.metadata() or {}))


def common_layout(paths: Sequence[str | os.PathLike]) -> Layout:
    """The layout every file in ``paths`` shares: same keys, shapes, dtypes and header metadata.

    Raises:
        ClipmergeError: naming the differing tensor (or metadata key) and the two files.
    """
    first, reference = paths[0], read_layout(paths[0])
    for path in paths[1:]:
        layout = read_layout(path)
        only_first = sorted(set(reference.specs) - set(layout.specs))
        only_other = sorted(set(layout.specs) - set(reference.specs))
        if only_first or only_other:
            key, where = (only_first[0], first) if only_first else (only_other[0], path)
            raise ClipmergeError(
                f"tensor {key!r} is in {where} but not in {path if where == first else first} "
                f"({len(only_first) + len(only_other)} keys differ between {first} and {path})"
            )
        for key, spec in reference.specs.items():
            other = layout.specs[key]
            if other != spec:
                raise ClipmergeError(
                    f"tensor {key!r}: {first} has {_describe(spec)}, {path} has {_describe(other)}"
                )
        for key in sorted(set(reference.metadata) | set(layout.metadata)):
            if reference.metadata.get(key) != layout.metadata.get(key):
                raise ClipmergeError(
                    f"header metadata {key!r}: {first} has {reference.metadata.get(key)!r}, "
                    f"{path} has {layout.metadata.get(key)!r}"
                )
    return reference


def _describe(spec: TensorSpec) -> str:
    return f"shape {list(spec.shape)} dtype {DTYPE_NAMES[spec.dtype]}"


class TensorReader:
    """Reads single tensors of one safetensors file into fresh memory (or into a given buffer),
    checking they are finite."""

    def __init__(self, path: str | os.PathLike):
        self.path = path
        self._fh = _open(path)
        self._offsets: dict[str, tuple[int, int]] | None = None
        self._raw = None  # an unbuffered handle for read_into, opened on first use

    def get(self, key: str) -> torch.Tensor:
        """Tensor ``key``; an unreadable or non-finite tensor raises an error naming file and key."""
        try:
            tensor = self._fh.get_tensor(key)
        except _READ_ERRORS as e:
            raise ClipmergeError(f"{self.path}: tensor {key!r} cannot be read ({e}); corrupt file?") from e
        check_finite(tensor, key, self.path)
        return tensor

    def read_into(self, key: str, out: torch.Tensor) -> torch.Tensor:
        """Read tensor ``key``'s bytes straight into ``out`` (contiguous, its dtype and numel), with no
        allocation and no finiteness check (the caller checks: see merging.driver); returns ``out``."""
        begin, end = self.offsets()[key]
        if out.numel() * out.dtype.itemsize != end - begin:
            raise ClipmergeError(f"{self.path}: tensor {key!r} holds {end - begin} bytes, the buffer "
                                 f"{out.numel() * out.dtype.itemsize}")
        return self.read_range(key, out, 0)

    def read_range(self, key: str, out: torch.Tensor, start: int) -> torch.Tensor:
        """Read elements ``[start, start + out.numel())`` of tensor ``key``'s flat data (``out``'s dtype)
        straight into ``out``, unchecked like :meth:`read_into`; returns ``out``."""
        begin, end = self.offsets()[key]
        first, nbytes = begin + start * out.dtype.itemsize, out.numel() * out.dtype.itemsize
        if not out.is_contiguous() or start < 0 or first + nbytes > end:
            raise ClipmergeError(f"{self.path}: tensor {key!r} holds {end - begin} bytes, cannot read {nbytes} "
                                 f"from element {start}")
        if self._raw is None:
            self._raw = open(self.path, "rb", buffering=0)  # noqa: SIM115  (closed in close())
        read = os.preadv(self._raw.fileno(), [memoryview(out.view(torch.uint8).reshape(-1).numpy())], first)
        if read != nbytes:
            raise ClipmergeError(f"{self.path}: tensor {key!r} is truncated ({read} of {nbytes} bytes)")
        return out

    def offsets(self) -> dict[str, tuple[int, int]]:
        """Absolute file offsets [begin, end) of every tensor's bytes, from the header."""
        if self._offsets is None:
            with open(self.path, "rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(size))
            self._offsets = {k: (8 + size + v["data_offsets"][0], 8 + size + v["data_offsets"][1])
                             for k, v in header.items() if k != "__metadata__"}
        return self._offsets

    def close(self) -> None:
        self._fh.__exit__(None, None, None)
        if self._raw is not None:
            self._raw.close()

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def assert_finite(tensor: torch.Tensor, key: str, path) -> None:
    """Raise naming ``path`` and ``key`` if a floating tensor holds NaN or inf (the exact check)."""
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise ClipmergeError(f"{path}: tensor {key!r} has {bad} NaN/inf values")


def check_finite(tensor: torch.Tensor, key: str, path) -> None:
    """Raise naming ``path`` and ``key`` if a floating tensor holds NaN or inf. One summing pass instead
    of isfinite's bool tensor (that check dominated merge time): a sum is finite unless some element is
    NaN/inf or it overflows, and the exact check settles those."""
    if tensor.is_floating_point() and not torch.isfinite(tensor.sum()):
        assert_finite(tensor, key, path)


def write_order(specs: Mapping[str, TensorSpec]) -> list[str]:
    """Largest element size first, then by name, as safetensors' own ``save_file`` does: with the
    header padded to 8 bytes this keeps every tensor aligned to its element size."""
    return sorted(specs, key=lambda k: (-specs[k].dtype.itemsize, k))


def _header_bytes(layout: Layout, order: Sequence[str]) -> bytes:
    # Metadata keys sorted: safetensors' own writer orders them by hash, i.e. randomly per run.
    header: dict[str, object] = {"__metadata__": dict(sorted(layout.metadata.items()))} if layout.metadata else {}
    offset = 0
    for key in order:
        spec = layout.specs[key]
        header[key] = {
            "dtype": DTYPE_NAMES[spec.dtype],
            "shape": list(spec.shape),
            "data_offsets": [offset, offset + spec.nbytes],
        }
        offset += spec.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


class _BackgroundFlush:
    """fdatasync a file that is being written, from a second thread, each time FLUSH_EVERY more bytes
    were written: the disk writes overlap with producing the next tensors, so the final fsync of
    atomic_write finds little left to do (it alone was 1-2.5 s of a ViT-B/32 merge)."""

    def __init__(self, fd: int):
        self._fd, self._pending, self._running = fd, 0, None
        self._pool = ThreadPoolExecutor(max_workers=1)

    def wrote(self, nbytes: int) -> None:
        self._pending += nbytes
        if self._pending >= FLUSH_EVERY and (self._running is None or self._running.done()):
            self._running, self._pending = self._pool.submit(os.fdatasync, self._fd), 0

    def __enter__(self) -> _BackgroundFlush:
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True)  # before the file is closed: no fdatasync on a closed descriptor
        if self._running is not None and exc == (None, None, None):
            self._running.result()  # a failed flush is an I/O error the final fsync would hit too


def write_streaming(
    path: str | os.PathLike, layout: Layout, tensors: Iterable[tuple[str, torch.Tensor]]
) -> None:
    """Write a safetensors file atomically from ``(key, tensor)`` pairs produced one at a time.

    ``tensors`` must yield exactly the keys of ``layout`` in ``write_order(layout.specs)``, each with
    its spec's dtype and shape; only the tensor being written is held. ``path`` is replaced only
    after the last byte is on disk, so an exception (e.g. a NaN found in a late input tensor) leaves
    any existing file untouched.
    """
    order = write_order(layout.specs)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh, _BackgroundFlush(fh.fileno()) as flush:
            fh.write(_header_bytes(layout, order))
            produced = iter(tensors)
            for expected in order:
                key, tensor = next(produced, (None, None))
                if key != expected:
                    raise ValueError(f"write_streaming: expected tensor {expected!r}, got {key!r}")
                spec = layout.specs[key]
                if tensor.dtype != spec.dtype or tuple(tensor.shape) != spec.shape:
                    raise ValueError(f"write_streaming: tensor {key!r} does not match its header entry")
                fh.write(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
                flush.wrote(spec.nbytes)
            if next(produced, None) is not None:
                raise ValueError("write_streaming: more tensors than the layout lists")

    atomic_write(path, write)
