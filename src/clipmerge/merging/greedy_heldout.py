"""Greedy soup of classifier checkpoints, judged on the held-out split of the training set.

The held-out images are decoded and resized once into a uint8 cache (clipmerge.data.cache; kept in
memory, or in a file to reuse across runs); every ingredient and every candidate soup is evaluated on
that cache. The search itself is clipmerge.merging.greedy_soup.

Writes ``model.safetensors`` (the ingredients' header metadata kept), ``meta.json`` and ``greedy.json``
(ranking, every step, the accepted ingredients) beside it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from clipmerge import layout
from clipmerge.data.cache import file_keys, with_cache
from clipmerge.data.splits import Transformed, heldout_set
from clipmerge.errors import ClipmergeError
from clipmerge.evaluation.predict import predict, topk_accuracy
from clipmerge.files import write_json
from clipmerge.merging.greedy_soup import GreedyResult, greedy_soup
from clipmerge.models.classifier import load_classifier
from clipmerge.models.clip import eval_transform, preprocess_cfg
from clipmerge.weights.checkpoint import classifier_arch, load_weights, save_weights
from clipmerge.weights.streaming import common_layout

log = logging.getLogger(__name__)

ACCEPT = {"strict": ">", "geq": ">="}  # model-soups' code / the paper's Recipe 1


def ingredient_ids(inputs: list[str | os.PathLike], metas: list[dict]) -> dict[str, str | os.PathLike]:
    """Model id (from each input's meta.json) -> checkpoint path; ids must be distinct."""
    ids: dict[str, str | os.PathLike] = {}
    for path, meta in zip(inputs, metas, strict=True):
        model_id = meta["model"]
        if model_id in ids:
            raise ClipmergeError(f"{ids[model_id]} and {path} have the same model id {model_id!r}")
        ids[model_id] = path
    return ids


def make_greedy_soup(inputs: list[str | os.PathLike], out: str | os.PathLike, *, model_id: str, train_root,
                     heldout, accept: str, batch_size: int, device, workers: int, cache=None,
                     precision: str = "fp32") -> GreedyResult:
    """Run greedy soup over ``inputs`` on the held-out split and write the soup with its records.

    Args:
        accept: "strict" (model-soups' code) or "geq" (the paper's Recipe 1).
        cache: file of the preprocessed held-out images (reused if it matches, else rebuilt there);
            None keeps them in memory.
        precision: the image tower's precision on the held-out images (eval.precision).
    """
    if batch_size < 1:
        raise ClipmergeError(f"--batch-size must be >= 1, got {batch_size}")
    metas = [layout.read_meta(path) for path in inputs]
    paths = ingredient_ids(inputs, metas)
    header = common_layout(inputs)  # same tensors and header (arch, num_classes) in every input
    arch, num_classes = classifier_arch(inputs[0])
    pretrained = layout.pretrained_of(dict(zip(map(str, inputs), metas, strict=True)))

    subset = heldout_set(train_root, heldout)
    folder = subset.dataset
    if len(folder.classes) != num_classes:
        raise ClipmergeError(
            f"{train_root}: {len(folder.classes)} class folders, but the checkpoints' head has {num_classes} classes"
        )
    model = load_classifier(inputs[0])

    def search(images) -> tuple[GreedyResult, int]:
        def evaluate(state) -> float:
            began = time.perf_counter()
            model.load_state_dict(state, strict=True)
            logits, labels = predict(model, images.batches(batch_size, device), device, desc="greedy soup",
                                     precision=precision)
            top1 = topk_accuracy(logits, labels, ks=(1,))[1]
            log.info("held-out top-1 %.2f (%.1f s)", top1, time.perf_counter() - began)
            return top1

        log.info("greedy soup over %d ingredients on %d held-out images", len(paths), len(images))
        return greedy_soup(list(paths), lambda name: load_weights(paths[name]), evaluate,
                           accept=ACCEPT[accept]), len(images)

    result, heldout_size = with_cache(
        search, cache, lambda transform: Transformed(subset, transform),
        sample_ids=file_keys([folder.samples[i][0] for i in subset.indices], folder.root),
        labels=[folder.samples[i][1] for i in subset.indices],
        transform=eval_transform(preprocess_cfg(arch, model)), batch_size=batch_size, workers=workers,
    )

    save_weights(result.soup, out, metadata=header.metadata)
    hparams = {"accept": accept, "heldout_size": heldout_size, "precision": precision}
    layout.write_meta(out, layout.model_meta_record(model_id, "greedy_soup", arch, pretrained,
                                                    ingredients=result.ingredients, hparams=hparams))
    write_json(Path(out).with_name(layout.GREEDY_DIAGNOSTICS), {
        "model": model_id,
        "metric": "held-out top-1 (%)",
        "inputs": {k: str(v) for k, v in paths.items()},
        "heldout": str(heldout),
        **hparams,
        **result.to_json(),
    })
    log.info("wrote %s: %d of %d ingredients, held-out top-1 %.2f",
             out, len(result.ingredients), len(paths), result.best_accuracy)
    return result
