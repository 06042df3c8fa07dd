"""Apply a registered merge method to safetensors checkpoints, streaming tensor by tensor.

Memory: for each tensor key, the method sees a lazy column that reads that tensor from each input
only when iterated, and the merged tensor is written out at once. Uniform soup, WiSE-FT and the
task-vector merges (task arithmetic, TIES, DARE, DARE-TIES, SLERP) therefore hold a few copies of one
tensor at a time, reading the inputs one by one; Model Stock holds an [N, numel] float32 buffer of
deltas (it needs every pairwise angle), allocated once for the largest tensor and reused. Nothing ever
holds a whole model.

Safety: every input is validated (readable header, same keys/shapes/dtypes/metadata) before a byte is
written; tensors are checked finite as they are read; the output appears atomically at the end, so a
failure at any point leaves an existing output untouched.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import torch

from clipmerge import layout
from clipmerge.errors import ClipmergeError
from clipmerge.files import write_json
from clipmerge.merging.diagnostics import TensorDiagnostics, summarize
from clipmerge.merging.registry import MergeMethod, get
from clipmerge.weights.checkpoint import classifier_arch
from clipmerge.weights.streaming import Layout, TensorReader, check_finite, common_layout, write_order, write_streaming

log = logging.getLogger(__name__)
# The most memory a streamed merge's scratch may take (model_stock's [N, numel] rows; at N = 72 a ViT-B/32
# tensor's rows alone were 2.0x a whole checkpoint).
SCRATCH_BYTES = 128 << 20


@dataclass
class MergeReport:
    """What ``merge_checkpoints`` did: the shared layout and per-tensor diagnostics (Model Stock, SLERP)."""

    method: str
    options: dict
    layout: Layout
    tensors: dict[str, TensorDiagnostics] = field(default_factory=dict)

    def to_json(self) -> dict:
        """The diagnostics part of ``merge.json``."""
        out: dict = {"method": self.method, "options": self.options, "n_tensors": len(self.layout.specs)}
        if self.tensors:
            out["summary"] = summarize(self.tensors)
            out["tensors"] = {k: d.to_json() for k, d in self.tensors.items()}
        return out


class _Column(Sequence):
    """Tensor ``key`` of every input, read from disk only when indexed or iterated.

    With ``rows`` (a method's scratch viewed as [N, numel], when its dtype is the tensor's), input i is
    read straight into row i, unchecked: the method finds it there with no copy, and the driver checks
    the inputs for NaN/inf only if the method's result is not finite (see merge_checkpoints)."""

    def __init__(self, readers: Sequence[TensorReader], key: str, rows: torch.Tensor | None = None):
        self._readers, self._key, self._rows = readers, key, rows

    def __len__(self) -> int:
        return len(self._readers)

    def __getitem__(self, i):
        if self._rows is None:
            return self._readers[i].get(self._key)
        return self._readers[i].read_into(self._key, self._rows[i])

    def read_columns(self, start: int, rows: torch.Tensor) -> torch.Tensor:
        """Elements [start, start + width) of every input's flat tensor into ``rows`` [N, width], unchecked."""
        for reader, row in zip(self._readers, rows, strict=True):
            reader.read_range(self._key, row, start)
        return rows

    def check_finite(self) -> None:
        """The exact NaN/inf check of every input's tensor, naming the file."""
        for i, reader in enumerate(self._readers):
            check_finite(self._rows[i] if self._rows is not None else reader.get(self._key), self._key, reader.path)


def merge_checkpoints(
    method: str,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    anchor: str | os.PathLike | None = None,
    options: Mapping | None = None,
) -> MergeReport:
    """Merge safetensors checkpoints into ``out`` with a registered method, streaming.

    Args:
        method: a registry name with a per-tensor function (model_stock, uniform_soup, wise_ft,
            task_arithmetic, ties, dare, dare_ties, slerp).
        inputs: the checkpoints to merge (fine-tunes; for wise_ft exactly one, for slerp two).
        out: output path, written atomically; must not be one of the inputs.
        anchor: the pre-trained/zero-shot checkpoint (model_stock's w0, wise_ft's alpha = 0 end, the
            task-vector merges' w0).
        options: keyword options of the method (model_stock: average, clamp_negative, eps;
            wise_ft: alpha; task_arithmetic: scale; ties: density, scale; dare and dare_ties:
            drop_rate, scale, mask_seed; slerp: t, space). A method whose registry entry
            ``needs_key`` also gets each tensor's state-dict key as ``key``.

    Returns:
        A report with the inputs' layout (header metadata is copied to ``out``) and diagnostics.

    Raises:
        ClipmergeError: wrong method/options/input count, mismatched or corrupt inputs, non-finite
            input tensors, or a tensor the method cannot merge (message names the tensor).
    """
    spec = get(method)
    options = dict(options or {})
    merge_tensor = spec.merge_tensor
    _check_call(spec, merge_tensor, inputs, anchor, options, out)
    files = [*inputs, anchor] if anchor is not None else list(inputs)
    layout = common_layout(files)
    log.info("%s: merging %d tensors of %d inputs into %s", method, len(layout.specs), len(inputs), out)

    report = MergeReport(method, options, layout)
    call_options = dict(options)
    scratch = None
    if spec.uses_scratch:
        largest = max((s.nbytes // s.dtype.itemsize for s in layout.specs.values()), default=0)
        # At most SCRATCH_BYTES: a tensor whose N rows do not fit is merged block by block (model_stock).
        elements = min(len(inputs) * largest, max(len(inputs), SCRATCH_BYTES // 4))
        scratch = call_options["scratch"] = torch.empty(elements, dtype=torch.float32)
    with ExitStack() as open_files:
        readers = [open_files.enter_context(TensorReader(p)) for p in inputs]
        anchor_reader = open_files.enter_context(TensorReader(anchor)) if anchor is not None else None

        def merged_tensors():
            for key in write_order(layout.specs):
                anchor_tensor = anchor_reader.get(key) if anchor_reader else None
                tensor_spec = layout.specs[key]
                # The scratch's dtype: the inputs are read into it unchecked (whole rows, or blocks of
                # columns when N rows do not fit), so a NaN/inf input is found in the result instead.
                unchecked = scratch is not None and tensor_spec.dtype == scratch.dtype
                numel = tensor_spec.nbytes // tensor_spec.dtype.itemsize
                rows = None
                if unchecked and len(inputs) * numel <= scratch.numel():
                    rows = scratch[: len(inputs) * numel].view(len(inputs), numel)
                column = _Column(readers, key, rows)
                try:
                    tensor, diagnostics = merge_tensor(column, anchor_tensor, **call_options,
                                                       **({"key": key} if spec.needs_key else {}))
                    if unchecked:  # a NaN/inf input spreads to the result
                        check_finite(tensor, key, "the merged model")
                except ClipmergeError as e:
                    if unchecked:
                        column.check_finite()  # name the input that holds it, if one does
                    raise ClipmergeError(f"tensor {key!r}: {e}") from e
                if diagnostics is not None:
                    report.tensors[key] = diagnostics
                yield key, tensor

        write_streaming(out, layout, merged_tensors())
    _log_guards(method, report.tensors)
    return report


def _check_call(spec: MergeMethod, merge_tensor, inputs, anchor, options: dict, out) -> None:
    if merge_tensor is None:
        raise ClipmergeError(f"{spec.name} is not a tensor-wise merge (use `clipmerge greedy-soup`)")
    if spec.needs_key and "key" in options:
        raise ClipmergeError(f"{spec.name}: 'key' is no option (the driver passes each tensor's key)")
    try:
        inspect.signature(merge_tensor).bind([], None, **options, **({"key": ""} if spec.needs_key else {}))
    except TypeError as e:
        raise ClipmergeError(f"{spec.name}: bad options {sorted(options)} ({e})") from None
    spec.check_options(options)
    n = len(inputs)
    if n < spec.min_inputs or (spec.max_inputs is not None and n > spec.max_inputs):
        wanted = f"{spec.min_inputs}..{spec.max_inputs or 'N'}"
        raise ClipmergeError(f"{spec.name} needs {wanted} input checkpoints, got {n}")
    if spec.needs_anchor != (anchor is not None):
        need = "needs" if spec.needs_anchor else "does not use"
        raise ClipmergeError(f"{spec.name} {need} an anchor (pre-trained/zero-shot) checkpoint")
    out_path = Path(out).resolve()
    for path in [*inputs, anchor]:
        if path is not None and Path(path).resolve() == out_path:
            raise ClipmergeError(f"output {out} is also an input; refusing to overwrite it")


def _log_guards(method: str, tensors: Mapping[str, TensorDiagnostics]) -> None:
    if not tensors:
        return
    for guard, keys in summarize(tensors)["guarded"].items():
        log.warning("%s guard %s on %d tensors (e.g. %s)", method, guard, len(keys), ", ".join(keys[:3]))


def merge_models(
    method: str,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    model_id: str,
    anchor: str | os.PathLike | None = None,
    options: Mapping | None = None,
) -> MergeReport:
    """Merge classifier models into ``out`` and record it: :func:`merge_checkpoints`, then the model's
    meta.json (ingredients = the inputs' model ids, from their meta.json) and merge.json beside it.

    Everything is read and validated before the first write, so a failure leaves earlier outputs as
    they were.
    """
    options = dict(options or {})
    metas = [layout.read_meta(path) for path in inputs]
    ingredients = [meta["model"] for meta in metas]
    anchor_meta = layout.read_meta(anchor) if anchor is not None else None
    anchor_id = anchor_meta["model"] if anchor_meta is not None else None
    sources = {str(anchor): anchor_meta} if anchor_meta is not None else dict(zip(map(str, inputs), metas, strict=True))
    pretrained = layout.pretrained_of(sources)
    arch, _ = classifier_arch(inputs[0])  # the inputs agree with it, or merge_checkpoints refuses
    report = merge_checkpoints(method, inputs, out, anchor=anchor, options=options)
    hparams = {**options, "anchor": anchor_id} if anchor_id else options
    layout.write_meta(out, layout.model_meta_record(model_id, method, arch, pretrained, ingredients=ingredients,
                                                    hparams=hparams))
    write_json(Path(out).with_name(layout.MERGE_DIAGNOSTICS), {
        "model": model_id,
        "inputs": [str(p) for p in inputs],
        "anchor": None if anchor is None else str(anchor),
        **report.to_json(),
    })
    log.info("wrote %s (%s of %d inputs)", out, method, len(inputs))
    return report
