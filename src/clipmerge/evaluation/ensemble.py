"""The output-space ensemble of N fine-tunes (Model Soups' "logit ensemble", Table 3), from their saved
predictions: no model is run again. Torch-free.

Choices:
- **The mean of the members' logits**, not of their softmax outputs: it is the ensemble Model Soups
  compares its soups with, and the members share one logit scale (every head starts from the
  zero-shot head's ``logit_scale.exp()``), so no member dominates by scale alone.
- **In each set's own label space**: the stored logits are already projected (ImageNet-R/A's 200
  columns, ObjectNet's 113 max-pooled classes). For R/A that equals averaging the 1000 logits and
  projecting after; for ObjectNet it is the mean of the members' max-pooled logits (not the max of
  the mean logits).
- The logits are read from the fp16 files and averaged in fp32; ranking breaks ties by the lower class.
- Its cost: every member's training, and N forward passes per image at inference.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from clipmerge import layout
from clipmerge.errors import ClipmergeError
from clipmerge.evaluation.predictions import (
    check_same_images,
    ranked,
    read_predictions,
    topk_accuracy,
    write_predictions,
)
from clipmerge.evaluation.records import read_evals, write_eval
from clipmerge.files import write_json

log = logging.getLogger(__name__)
COMBINE = "mean_logits"


def mean_logits(prediction_paths: Sequence[str | os.PathLike]):
    """The members' mean logits on one set (one member's logits in memory at a time), with the
    first member's predictions record (labels, image order)."""
    first, total = None, None
    for path in prediction_paths:
        pred = read_predictions(path, logits=True)
        if first is None:
            first, total = pred, pred.logits.astype(np.float32, copy=True)
            continue
        check_same_images(first, pred)
        if pred.logits.shape != total.shape:
            raise ClipmergeError(f"{path}: logits {pred.logits.shape}, but {first.path} has {total.shape}")
        total += pred.logits
    if first is None:
        raise ClipmergeError("the ensemble needs at least one member")
    return total / len(prediction_paths), first


def build_ensemble(model_id: str, member_evals: Sequence[str], member_metas: Sequence[str],
                   out_evals: Sequence[str], out_meta: str | os.PathLike) -> None:
    """Write the ensemble's eval JSON and predictions on every set of ``out_evals`` from its members'
    (``member_evals``: every member's eval JSON on those sets, predictions beside them), then its
    meta.json (``ingredients`` = the members)."""
    metas = {str(p): layout.read_meta(p) for p in member_metas}
    members = [meta["model"] for meta in metas.values()]
    if len(members) < 2:
        raise ClipmergeError(f"the ensemble needs at least 2 members, got {members}")
    evals = read_evals(member_evals)
    for out in out_evals:
        model, eval_set = layout.parse_eval_result(out)
        if model != model_id:
            raise ClipmergeError(f"{out}: an output of model {model!r}, not {model_id!r}")
        missing = [m for m in members if eval_set not in evals.get(m, {})]
        if missing:
            raise ClipmergeError(f"--members: no eval JSON of {missing} on {eval_set!r}")
        results = [evals[m][eval_set] for m in members]
        logits, first = mean_logits([layout.predictions_beside(r.path) for r in results])
        ranking = ranked(logits)
        write_predictions(layout.predictions_beside(out), model=model_id, eval_set=eval_set, logits=logits,
                          labels=first.labels, top1=ranking[:, 0], samples=first.samples)
        accuracy = topk_accuracy(ranking, first.labels)
        write_eval(out, model_id, eval_set, results[0].adapter, accuracy, len(first.labels), logits.shape[1])
        log.info("%s of %d on %s: top1 %.2f", model_id, len(members), eval_set, accuracy[1])
    record = layout.model_meta_record(model_id, layout.ENSEMBLE, next(iter(metas.values())).get("arch"),
                                      layout.pretrained_of(metas), ingredients=members,
                                      hparams={"combine": COMBINE})
    write_json(out_meta, record)
