"""The MLflow store: created once with the study's experiment before any parallel writer, the helpers
every writer shares (URI resolution, the sqlite file lock, the retry on "database is locked"), and the
server that shows the UI.

Why the store is created by one job first (measured with MLflow 3.17.2): concurrent first-time schema
migrations of a sqlite store break it for good, and ``set_experiment`` racing ``create_experiment``
silently files runs in the Default experiment. So one job (`clipmerge init-mlflow`) migrates the
schema and creates the experiment, and writers receive the experiment id through its receipt.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import random
import subprocess
import time
import urllib.parse
from pathlib import Path

from clipmerge.errors import ClipmergeError
from clipmerge.files import read_object, write_json

log = logging.getLogger(__name__)

RECEIPT_KEYS = ("tracking_uri", "experiment_id", "experiment")
# Makes the UI open the experiment in its "Model training" view: without it MLflow 3 shows the GenAI one.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
ARTIFACTS_DIR = "mlartifacts"
DEFAULT_UI = "http://127.0.0.1:5000"


def resolve_tracking_uri(cli_uri: str | None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``cli_uri``; a relative sqlite path is made absolute.

    Writers get the resolved URI from the receipt, so they use this store whatever their working directory.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or cli_uri
    if not uri:
        raise ClipmergeError("--tracking-uri is required when MLFLOW_TRACKING_URI is not set")
    if (db := sqlite_path(uri)) is not None:
        return f"sqlite:///{db.resolve()}"
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None (servers, other databases, in-memory)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or len(uri) == len(prefix):
        return None
    return Path(uri[len(prefix):].split("?", 1)[0])


@contextlib.contextmanager
def store_lock(uri: str):
    """Hold an exclusive fcntl lock on ``<db>.lock`` for a sqlite store; a no-op for other stores.

    It serialises search-then-create (and first-time migration) between processes on this host. A
    server or a shared database has writers on several hosts, where Snakemake's one-job-per-output
    guarantee is what keeps one writer per result key.
    """
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def retry_locked(fn, tries: int = 5, base_s: float = 1.0):
    """Wrap an MLflow call to retry on sqlite's "database is locked".

    MLflow waits 20 s (``busy_timeout``) and then gives up without retrying; a long transaction of
    another process (a UI query, ``mlflow gc``) can hold the lock longer than that.
    """
    from mlflow.exceptions import MlflowException

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for attempt in range(tries - 1):
            try:
                return fn(*args, **kwargs)
            except MlflowException as e:
                if "database is locked" not in str(e):
                    raise
                log.warning("database is locked; retry %d/%d", attempt + 1, tries - 1)
                time.sleep(base_s * 2**attempt + random.random())
        return fn(*args, **kwargs)

    return wrapper


def init_store(uri: str, experiment: str) -> str:
    """Create (or migrate) the store and get-or-create the experiment; return its id. Idempotent."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    db = sqlite_path(uri)
    # With a sqlite store, artifacts live beside the db (MLflow's default is ./mlruns of the cwd).
    artifact_location = (db.parent / ARTIFACTS_DIR).resolve().as_uri() if db else None
    with store_lock(uri):  # the first client call creates and migrates the schema
        client = MlflowClient(tracking_uri=uri)
        exp = retry_locked(client.get_experiment_by_name)(experiment)
        if exp is None:
            try:
                return retry_locked(client.create_experiment)(experiment, artifact_location, EXPERIMENT_TAGS)
            except MlflowException as e:  # another host created it first (server or shared database)
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                exp = client.get_experiment_by_name(experiment)
        if exp.lifecycle_stage == "deleted":
            log.warning("experiment %r was deleted; restoring it", experiment)
            retry_locked(client.restore_experiment)(exp.experiment_id)
        for key, value in EXPERIMENT_TAGS.items():
            if exp.tags.get(key) != value:
                retry_locked(client.set_experiment_tag)(exp.experiment_id, key, value)
        return exp.experiment_id


def write_receipt(path: str | os.PathLike, uri: str, experiment_id: str, experiment: str) -> None:
    """The receipt writers read the store and experiment from (:func:`read_receipt`)."""
    write_json(path, {"tracking_uri": uri, "experiment_id": experiment_id, "experiment": experiment})


def read_receipt(path: str | os.PathLike) -> dict:
    """Read an init-mlflow receipt, refusing one whose store differs from ``MLFLOW_TRACKING_URI``.

    The experiment id is only meaningful in the store that issued it: logging it elsewhere would
    misfile runs, so a changed environment needs a new receipt (rerun init-mlflow).
    """
    receipt = read_object(path, RECEIPT_KEYS)
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if env_uri and resolve_tracking_uri(env_uri) != receipt["tracking_uri"]:
        raise ClipmergeError(f"{path}: made for {receipt['tracking_uri']} but MLFLOW_TRACKING_URI is {env_uri}; "
                             "rerun init-mlflow (delete the receipt) to log to the new store")
    return receipt


def ui_base(uri: str) -> str:
    """Where the UI for a store is: the server itself for http(s) URIs, else the local `mlflow server`."""
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else DEFAULT_UI


def runs_url(experiment_id: str, base: str = DEFAULT_UI) -> str:
    """The experiment's runs table. ``workflowType`` skips the GenAI landing page MLflow 3 opens first."""
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def compare_url(run_ids: list[str], experiment_ids: list[str], base: str = DEFAULT_UI) -> str:
    """The compare view (parallel coordinates, metric table) of the given runs."""

    def enc(ids: list[str]) -> str:
        return urllib.parse.quote(json.dumps(ids, separators=(",", ":")), safe="")

    return f"{base}/#/compare-runs?runs={enc(run_ids)}&experiments={enc(experiment_ids)}"


def mlflow_server_argv(db_path: str | os.PathLike, port: int = 5000, mlflow_bin: str = "mlflow") -> list[str]:
    """The `mlflow server` command for a study's sqlite store, bound to 127.0.0.1 only.

    One worker: several uvicorn workers would each open the store, and on a fresh db that is the
    concurrent first-time migration that breaks it. Proxied artifacts (for experiments the server
    itself creates) go beside the db, like the ones init-mlflow's experiments write directly.
    """
    db = Path(db_path).resolve()
    return [mlflow_bin, "server", "--backend-store-uri", f"sqlite:///{db}",
            "--artifacts-destination", str(db.parent / ARTIFACTS_DIR),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]


def start_mlflow_server(db_path: str | os.PathLike, port: int = 5000, mlflow_bin: str = "mlflow",
                        log_path: str | os.PathLike | None = None) -> subprocess.Popen:
    """Start the UI server of a study (see :func:`mlflow_server_argv`); the caller terminates it.

    It runs in its own process group so that ``os.killpg`` also stops its uvicorn and job-runner children.
    """
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen(mlflow_server_argv(db_path, port, mlflow_bin), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        if log_path:
            out.close()

