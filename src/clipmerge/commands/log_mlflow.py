"""`clipmerge log-mlflow`: log one model's result files as one MLflow run, the study's summary run, or
(``--runs``) every model's run and then the summary in one process (clipmerge.tracking.runs).
Idempotent: unchanged files log nothing."""

from __future__ import annotations

import argparse
import json
import logging

from clipmerge.commands.result_args import add_bootstrap_arguments
from clipmerge.errors import ClipmergeError
from clipmerge.files import write_json
from clipmerge.reporting.uncertainty import Bootstrap
from clipmerge.tracking.runs import log_run, model_payload, model_run_ids, summary_payload
from clipmerge.tracking.store import compare_url, read_receipt, runs_url, ui_base

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--receipt", required=True, help="receipt JSON written by init-mlflow")
    parser.add_argument("--out", required=True, help="tracking receipt JSON: run id, action, UI links")
    model = parser.add_argument_group("one model's run")
    model.add_argument("--study", help="the study (the run's result key is <study>/<model>)")
    model.add_argument("--meta", help="the model's meta.json")
    model.add_argument("--history", help="its history.jsonl (training runs): training curves")
    model.add_argument("--diagnostics", nargs="+", default=[], help="merge.json, greedy.json, ... to attach")
    model.add_argument("--evals", nargs="+", default=[], help="the model's eval/<model>/<eval_set>.json files")
    model.add_argument("--id", dest="id_set", help="the in-distribution eval set")
    model.add_argument("--shifts", nargs="+", default=[], help="the distribution-shift eval sets")
    model.add_argument("--config-hash", help="hash of the config that produced the results (tag)")
    model.add_argument("--runs", type=json.loads,
                       help="instead of --meta ...: a JSON list of runs, each {meta, history, diagnostics, evals, "
                            "predictions, config_hash, out}, logged in turn (then the summary run if --artifacts "
                            "is given)")
    add_bootstrap_arguments(parser)
    summary = parser.add_argument_group("the study's summary run")
    summary.add_argument("--summary", action="store_true", help="log --artifacts to the summary run")
    summary.add_argument("--artifacts", nargs="+", default=[],
                         help="files to attach, under their folder's name (tables/, plots/)")


def run(args: argparse.Namespace) -> None:
    receipt = read_receipt(args.receipt)
    uri, experiment_id = receipt["tracking_uri"], receipt["experiment_id"]
    if args.runs is not None:
        for spec in args.runs:
            log_model(uri, experiment_id, args, meta=spec["meta"], history=spec.get("history"),
                      diagnostics=spec.get("diagnostics", []), evals=spec["evals"],
                      predictions=spec.get("predictions", []), config_hash=spec.get("config_hash"), out=spec["out"])
        if args.artifacts:
            log_summary(uri, experiment_id, args.artifacts, args.out)
    elif args.summary:
        log_summary(uri, experiment_id, args.artifacts, args.out)
    else:
        log_model(uri, experiment_id, args, meta=args.meta, history=args.history, diagnostics=args.diagnostics,
                  evals=args.evals, predictions=args.predictions, config_hash=args.config_hash, out=args.out)


def log_model(uri: str, experiment_id: str, args, *, meta, history, diagnostics, evals, predictions, config_hash,
              out) -> None:
    needed = [("--study", args.study), ("--meta", meta), ("--evals", evals), ("--id", args.id_set),
              ("--shifts", args.shifts)]
    missing = [flag for flag, value in needed if not value]
    if missing:
        raise ClipmergeError(f"log-mlflow needs {', '.join(missing)} (or --summary)")
    payload = model_payload(args.study, meta, evals, args.id_set, args.shifts, history=history,
                            diagnostics=diagnostics, predictions=predictions,
                            protocol=Bootstrap(args.resamples, args.bootstrap_seed, args.level),
                            config_hash=config_hash)
    write_receipt(uri, experiment_id, payload, out)


def log_summary(uri: str, experiment_id: str, artifacts: list[str], out) -> None:
    base = ui_base(uri)
    write_receipt(uri, experiment_id, summary_payload(artifacts), out, extra=lambda: {
        "runs_url": runs_url(experiment_id, base),
        "compare_url": compare_url(model_run_ids(uri, experiment_id), [experiment_id], base)})


def write_receipt(uri: str, experiment_id: str, payload, out, extra=lambda: {}) -> None:
    run_id, action = log_run(uri, experiment_id, payload)
    base = ui_base(uri)
    receipt = {"tracking_uri": uri, "experiment_id": experiment_id, "run_id": run_id, "run_name": payload.run_name,
               "result_key": payload.key, "action": action,
               "run_url": f"{base}/#/experiments/{experiment_id}/runs/{run_id}", **extra()}
    write_json(out, receipt)
    log.info("%s run %s (%s): %s", action, payload.run_name, run_id, receipt["run_url"])
