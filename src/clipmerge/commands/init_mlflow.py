"""`clipmerge init-mlflow`: create the MLflow store and the study's experiment before any parallel
writer, and write the receipt the writers read (clipmerge.tracking.store)."""

from __future__ import annotations

import argparse
import logging

from clipmerge.tracking.store import init_store, resolve_tracking_uri, runs_url, ui_base, write_receipt

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri",
                        help="store to create, e.g. sqlite:///results/demo/mlflow.db; "
                             "MLFLOW_TRACKING_URI overrides it when set")
    parser.add_argument("--experiment", required=True, help="experiment name (one per study)")
    parser.add_argument("--out", required=True, help="receipt JSON: tracking_uri, experiment_id, experiment")


def run(args: argparse.Namespace) -> None:
    uri = resolve_tracking_uri(args.tracking_uri)
    experiment_id = init_store(uri, args.experiment)
    write_receipt(args.out, uri, experiment_id, args.experiment)
    log.info("experiment %r is id %s in %s; runs table: %s", args.experiment, experiment_id, uri,
             runs_url(experiment_id, ui_base(uri)))
