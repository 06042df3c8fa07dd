"""MLflow runs: one model's result files as one run, or the study's summary run.

MLflow is a view of ``results/<study>/``: a run is rebuilt from files alone (meta.json, history.jsonl,
the merge diagnostics and the eval JSONs), so it can be re-logged at any time without retraining.

Idempotence and replacement. A run is identified by its tag ``result_key``
(``<study>/<model>``, or ``summary``) and records a fingerprint of everything it logged in the tag
``result_sha``, which is written last. Re-logging unchanged files finds the run and writes nothing.
If the files changed (Snakemake reran the model), or a previous attempt died half-way, the old run
is deleted and a new one is created: MLflow params cannot change once written, and a run holding a
mix of old and new results would be wrong. Deleted runs stay in the store until ``mlflow gc``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from clipmerge import layout
from clipmerge.errors import ClipmergeError
from clipmerge.evaluation.records import read_evals
from clipmerge.reporting.results import check_eval_sets, id_and_shift_accuracy, read_history, training_hours
from clipmerge.reporting.uncertainty import Bootstrap, Study, read_correct
from clipmerge.tracking.store import retry_locked, store_lock
from clipmerge.training.recipe import rand_augment_name

log = logging.getLogger(__name__)

# Part of the fingerprint: bump it when what gets logged changes, so existing runs are rebuilt.
LOG_FORMAT = 4
SUMMARY_KEY = "summary"
# Params every run carries, numeric, so the compare view's parallel-coordinates axes stay numeric
# (a string such as "n/a" on one run turns the UI's axis categorical). Value when the model's
# meta.json does not record it: 0 for training hparams (zero-shot and merges train nothing themselves),
# -1 for alpha (not a WiSE-FT model), seed (no seed; 0 is a real seed) and variant (not a sweep variant).
# The training hparams are the keys of model-soups' sweep (clipmerge.training.sweep), so seed runs,
# sweep variants and imported model-soups fine-tunes line up on the same axes.
PARAM_DEFAULTS = {"lr": 0, "weight_decay": 0, "epochs": 0, "batch_size": 0, "label_smoothing": 0, "mixup_alpha": 0,
                  "randaugment_ops": 0, "randaugment_magnitude": 0, "alpha": -1, "seed": -1, "variant": -1}
# history.jsonl column -> metric name of its training curve.
CURVES = {"loss": "train/loss", "lr": "train/lr", "train_top1": "train/top1", "images_per_s": "train/images_per_s"}
MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit


@dataclass
class RunPayload:
    """Everything one run holds, built from result files before MLflow is touched."""

    key: str
    run_name: str
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    curves: list[tuple[str, float, int, int]] = field(default_factory=list)  # key, value, timestamp ms, step
    artifacts: list[tuple[Path, str | None]] = field(default_factory=list)  # file, artifact folder

    def fingerprint(self) -> str:
        """sha256 of everything logged, artifact bytes included."""
        h = hashlib.sha256()
        content = [LOG_FORMAT, self.key, self.run_name, self.tags, self.params, self.metrics, self.curves,
                   [(p.name, folder) for p, folder in self.artifacts]]
        h.update(json.dumps(content, sort_keys=True).encode())
        for path, _ in self.artifacts:
            h.update(path.read_bytes())
        return h.hexdigest()


def model_payload(study: str, meta_file: str | os.PathLike, eval_paths: list[str], id_set: str, shifts: list[str],
                  *, history: str | os.PathLike | None = None, diagnostics: list[str | os.PathLike] = (),
                  predictions: list[str] = (), protocol: Bootstrap | None = None,
                  config_hash: str | None = None) -> RunPayload:
    """The run of one model: tags and params from its meta.json, metrics from its eval JSONs and history
    (with ``predictions``, each top-1's confidence bounds ``top1_lo/<set>``, ``top1_hi/<set>`` under
    ``protocol``: the same as the table's), the meta.json and ``diagnostics`` (merge.json, greedy.json,
    ...) attached.

    Only the given files are read (the rule's inputs), so the run never goes stale.
    """
    check_eval_sets(id_set, shifts)
    meta_file = Path(meta_file)
    meta = layout.read_meta(meta_file)
    model = meta.get("model")
    key = f"{study}/{model}"
    if "'" in key:
        raise ClipmergeError(f"{meta_file}: result key {key!r} must not contain a quote")

    by_set = read_evals(eval_paths).get(model, {})
    others = [p for p in eval_paths if layout.parse_eval_result(p)[0] != model]
    if others:
        raise ClipmergeError(f"{others[0]}: an eval of another model passed to the run of {model!r}")
    if not by_set:
        raise ClipmergeError(f"--evals: no eval JSON of model {model!r}")
    id_top1, avg_shifts_top1 = id_and_shift_accuracy(by_set, id_set, shifts)
    metrics = {"top1/id": id_top1, "top1/avg_shifts": avg_shifts_top1}
    for name, r in by_set.items():
        metrics |= {f"top1/{name}": r.top1, f"top5/{name}": r.top5}
    if predictions:
        study = Study.of(read_correct(predictions, {model: by_set}), id_set, shifts, protocol or Bootstrap())
        for column, (lo, hi) in study.intervals(model).items():
            metrics |= {f"top1_lo/{column}": lo, f"top1_hi/{column}": hi}

    seed = meta.get("seed")
    ingredients = meta.get("ingredients", [])
    tags = {"result_key": key, "role": "model", "model": model, "method": str(meta.get("method", model)),
            "seed": "none" if seed is None else str(seed), "arch": str(meta.get("arch")),
            "pretrained": str(meta.get("pretrained")), "git_sha": str(meta.get("git_sha", "unknown")),
            "config_hash": config_hash or "unknown", "ingredients": ",".join(ingredients),
            "id_eval_set": id_set, "shift_eval_sets": ",".join(shifts)}
    if (augment := rand_augment_name(meta.get("hparams", {}))) is not None:
        tags["augment"] = augment

    curves = []
    if history is not None:
        rows = read_history(history)
        curves = history_curves(rows, str(history))
        metrics["train/hours"] = training_hours(rows, str(history))
    files = sorted([meta_file, *map(Path, diagnostics)], key=lambda p: p.name)
    return RunPayload(key=key, run_name=model, tags=tags, params=model_params(meta, meta_file), metrics=metrics,
                      curves=curves, artifacts=[(p, None) for p in files])


def model_params(meta: dict, meta_file: Path) -> dict[str, str]:
    """The fixed set of numeric params (see PARAM_DEFAULTS), as MLflow's strings."""
    hparams = meta.get("hparams", {})
    values = {k: hparams.get(k, default) for k, default in PARAM_DEFAULTS.items()}
    if "alpha" not in hparams and (alpha := layout.alpha_of(meta["model"])) is not None:
        values["alpha"] = alpha
    values["seed"] = PARAM_DEFAULTS["seed"] if meta.get("seed") is None else meta["seed"]
    if (variant := layout.parse_model_id(meta["model"]).variant) is not None:
        values["variant"] = variant
    values["num_ingredients"] = len(meta.get("ingredients", []))
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ClipmergeError(f"{meta_file}: {k} must be a number for the MLflow param, got {v!r}")
    return {k: str(v) for k, v in values.items()}


def history_curves(history: list[dict], source: str = "history") -> list[tuple[str, float, int, int]]:
    """Training curves ``(metric, value, timestamp_ms, step)`` from history rows.

    The timestamp is the row's ``elapsed_s`` (ms since training began), not the logging time, so the
    same file always yields the same points. Rows of a lockstep run (periodic Model Stock) carry a
    ``seed`` and get one curve per seed (``train/loss/seed0``). Missing or null values are skipped.
    """
    points = []
    for i, row in enumerate(history):
        if "step" not in row:
            raise ClipmergeError(f"{source}: row {i + 1} has no 'step'")
        ts = round(float(row.get("elapsed_s", 0)) * 1000)
        suffix = f"/seed{row['seed']}" if "seed" in row else ""
        for column, name in CURVES.items():
            if row.get(column) is not None:
                points.append((name + suffix, float(row[column]), ts, int(row["step"])))
    return points


def summary_payload(artifacts: list[str]) -> RunPayload:
    """The study's summary run: the comparison table and the plots as artifacts, under their folder names."""
    if not artifacts:
        raise ClipmergeError("--summary needs --artifacts (the comparison table and plots)")
    files = []
    for a in artifacts:
        path = Path(a)
        if not path.is_file():
            raise ClipmergeError(f"{path}: file not found")
        files.append((path, path.parent.name or None))
    return RunPayload(key=SUMMARY_KEY, run_name=SUMMARY_KEY, tags={"result_key": SUMMARY_KEY, "role": "summary"},
                      artifacts=files)


def log_run(uri: str, experiment_id: str, payload: RunPayload) -> tuple[str, str]:
    """Make the store hold exactly one finished run for ``payload.key`` with this content.

    Returns:
        ``(run_id, action)``, action being "unchanged", "created" or "replaced".
    """
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri=uri)
    sha = payload.fingerprint()
    with store_lock(uri):  # search-then-create must not interleave between writers of one key
        found = retry_locked(client.search_runs)(
            [experiment_id], filter_string=f"tags.result_key = '{payload.key}'",
            run_view_type=ViewType.ACTIVE_ONLY)
        current = next((r for r in found if r.data.tags.get("result_sha") == sha), None)
        for r in found:
            if r is not current:
                retry_locked(client.delete_run)(r.info.run_id)
        if current is not None:
            return current.info.run_id, "unchanged"
        run_id = retry_locked(client.create_run)(
            experiment_id, run_name=payload.run_name, tags={"result_key": payload.key}).info.run_id
    _write_run(client, run_id, payload)
    retry_locked(client.set_terminated)(run_id, "FINISHED")
    retry_locked(client.set_tag)(run_id, "result_sha", sha)  # last: marks the run complete
    return run_id, "replaced" if found else "created"


def _write_run(client, run_id: str, payload: RunPayload) -> None:
    from mlflow.entities import Metric, Param, RunTag

    log_batch = retry_locked(client.log_batch)
    log_batch(run_id, params=[Param(k, v) for k, v in payload.params.items()],
              tags=[RunTag(k, v) for k, v in payload.tags.items()])
    # Summary metrics at a fixed timestamp and step: re-logging them never adds history points.
    metrics = [Metric(k, v, 0, 0) for k, v in payload.metrics.items()]
    metrics += [Metric(k, v, ts, step) for k, v, ts, step in payload.curves]
    for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        log_batch(run_id, metrics=metrics[start:start + MAX_METRICS_PER_BATCH])
    for path, folder in payload.artifacts:
        retry_locked(client.log_artifact)(run_id, str(path), folder)


def model_run_ids(uri: str, experiment_id: str) -> list[str]:
    """Ids of the experiment's model runs, in the table's row order."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri=uri)
    runs = retry_locked(client.search_runs)([experiment_id], filter_string="tags.role = 'model'",
                                            run_view_type=ViewType.ACTIVE_ONLY)
    runs = sorted(runs, key=lambda r: layout.model_sort_key(r.info.run_name or ""))
    return [r.info.run_id for r in runs]
