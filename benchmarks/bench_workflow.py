"""Workflow overhead: planning the paper-scale DAG and re-running a finished study, vs Snakemake start-up.

(a) ``snakemake -n`` on config/imagenet.yaml with 72 seeds, every merge method and the 6 eval sets, in
    a scratch directory holding a fake dataset tree of empty folders (as tests/workflow/test_plan_dag.py
    does: the roots must exist, their contents are only read by jobs). Target < 10 s.
(b) A no-op rerun of a finished study: ``snakemake -n`` and a real ``snakemake --cores 2`` that finds
    nothing to do. Target < 15 s each. The study is the tiny config (tests/workflow/tiny.yaml), run
    once here in a scratch directory (2-4 min on 2 busy cores, not timed against the target), or
    an existing finished run directory given with ``--workdir`` (e.g. /work/main for results/demo).
    If a dry run there plans any job (the study is unfinished, or its rules' code or inputs changed
    since), the real rerun is skipped, since it would do work, and a note says so.

The baseline, timed in the same repetitions (interleaved, order alternating, medians), is
``snakemake --version``: interpreter start-up plus importing Snakemake, which every invocation pays.

Every Snakemake invocation, even ``--version``, imports the installed executor plugins, and the SLURM
plugin (2.8) runs ``scontrol show config`` (timeout 10 s) while being imported. Where SLURM's client
is installed and configured but no controller answers, that costs up to 10 s per invocation; the
script times ``scontrol show config`` once and prints it. ``--stub-scontrol`` puts an ``scontrol``
that fails at once first on PATH, as on a machine without SLURM, to measure Snakemake's own overhead.

    .venv/bin/python benchmarks/bench_workflow.py                       # (a), and (b) on a fresh tiny run
    .venv/bin/python benchmarks/bench_workflow.py --workdir /work/main  # (b) on the demo's results/demo
    .venv/bin/python benchmarks/bench_workflow.py --quick               # (a) once; (b) only with --workdir
    .venv/bin/python benchmarks/bench_workflow.py --stub-scontrol       # without a SLURM controller's timeout
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from bench_eval import interleave, machine, paired_ratio

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
TARGETS = {"dry_run_paper": 10.0, "noop_dry_run": 15.0, "noop_rerun": 15.0}


def env(stub_dir: Path | None) -> dict:
    """The venv's bin first on PATH so jobs find `clipmerge` (after ``stub_dir``, if given); the study's
    own MLflow store."""
    environ = dict(os.environ)
    first = [str(stub_dir)] if stub_dir else []
    environ["PATH"] = os.pathsep.join([*first, str(Path(sys.executable).parent), environ["PATH"]])
    environ.pop("MLFLOW_TRACKING_URI", None)
    return environ


def stub_scontrol(directory: Path) -> Path:
    """A directory holding an `scontrol` that fails at once (the SLURM plugin then assumes defaults)."""
    directory.mkdir(parents=True)
    stub = directory / "scontrol"
    stub.write_text("#!/bin/sh\nexit 1\n")
    stub.chmod(0o755)
    return directory


def slurm_query_seconds() -> float | None:
    """Seconds `scontrol show config` takes here (None without SLURM's client)."""
    if shutil.which("scontrol") is None:
        return None
    start = time.perf_counter()
    subprocess.run(["scontrol", "show", "config"], capture_output=True, timeout=30)
    return time.perf_counter() - start


def run_snakemake(workdir: Path | None, configfile: Path | None, *args: str, environ: dict) -> tuple[float, str]:
    """Run Snakemake on the repository's Snakefile; (wall seconds, stdout + stderr). Fails loudly."""
    cmd = [SNAKEMAKE]
    if workdir is not None:
        cmd += ["-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile", str(configfile)]
    start = time.perf_counter()
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, env=environ)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd + list(args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout + proc.stderr


def planned_jobs(output: str) -> int:
    """Total jobs of a dry run's job stats (0 when there is nothing to do)."""
    match = re.search(r"^total\s+(\d+)$", output, flags=re.M)
    return int(match.group(1)) if match else 0


def paper_config(workdir: Path, seeds: int) -> Path:
    config = yaml.safe_load((REPO / "config" / "imagenet.yaml").read_text())
    for spec in [config["train"]["data"], *config["eval"]["sets"].values()]:
        (workdir / spec["root"]).mkdir(parents=True, exist_ok=True)
    config["finetune"]["seeds"] = list(range(seeds))
    path = workdir / "imagenet.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repetition; (b) only if --workdir is given")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a target is missed or the study of (b) is not finished")
    parser.add_argument("--workdir", type=Path, help="finished run directory for (b) instead of a fresh tiny run")
    parser.add_argument("--configfile", type=Path,
                        help="config of --workdir's study (default: the repository's config/config.yaml)")
    parser.add_argument("--seeds", type=int, default=72, help="fine-tuning seeds in the paper-scale config")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stub-scontrol", action="store_true",
                        help="an scontrol that fails at once first on PATH (no SLURM controller timeout)")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` deletes the scratch directories
    print(f"machine: {machine()}", flush=True)
    query = slurm_query_seconds()
    print("scontrol: not installed" if query is None else f"scontrol show config: {query:.1f} s", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench_workflow."))
    snakemake = functools.partial(
        run_snakemake, environ=env(stub_scontrol(scratch / "stub") if args.stub_scontrol else None)
    )
    rows, notes, rerun_untimed = [], [], False
    try:
        _, version = snakemake(None, None, "--version")
        print(f"snakemake {version.strip()}, stub scontrol: {args.stub_scontrol}, "
              f"median of {args.repeats} interleaved repetitions", flush=True)
        paper = scratch / "paper"
        config = paper_config(paper, args.seeds)
        _, plan = snakemake(paper, config, "-n")
        notes.append(f"(a) paper-scale DAG with {args.seeds} seeds: {planned_jobs(plan)} jobs")
        arms = {
            "snakemake --version": lambda: snakemake(None, None, "--version"),
            "dry_run_paper": lambda: snakemake(paper, config, "-n"),
        }
        rows.append(("a", interleave(arms, args.repeats, "(a)")))

        study, study_config = args.workdir, args.configfile or REPO / "config" / "config.yaml"
        if study is None and not args.quick:
            study, study_config = scratch / "tiny", REPO / "tests" / "workflow" / "tiny.yaml"
            seconds, _ = snakemake(study, study_config, "--cores", "2")
            notes.append(f"(b) the tiny study ran in {seconds:.0f} s before the no-op reruns were timed")
        if study is not None:
            pending = planned_jobs(snakemake(study, study_config, "-n")[1])
            arms = {
                "snakemake --version": lambda: snakemake(None, None, "--version"),
                "noop_dry_run": lambda: snakemake(study, study_config, "-n"),
            }
            rerun_untimed = bool(pending)
            if pending:
                notes.append(f"(b) {study}: a dry run plans {pending} jobs, so the real rerun was not timed")
            else:
                arms["noop_rerun"] = lambda: snakemake(study, study_config, "--cores", "2")
            rows.append(("b", interleave(arms, args.repeats, "(b)")))
            notes.append(f"(b) study: {study} with {study_config}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\nmachine at the end: load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(*notes, sep="\n")
    print("| part | command | s (median) | s (min-max) | / snakemake --version | target | |")
    print("|---|---|---|---|---|---|---|")
    missed = []
    for part, times in rows:
        for name, t in times.items():
            seconds, target = statistics.median(t), TARGETS.get(name)
            ratio = paired_ratio(times, name, "snakemake --version")
            verdict = "" if target is None else ("met" if seconds < target else "MISSED")
            missed += [name] if verdict == "MISSED" else []
            print(f"| {part} | {name} | {seconds:.2f} | {min(t):.2f}-{max(t):.2f} | {ratio:.1f} | "
                  f"{'' if target is None else f'< {target:.0f} s'} | {verdict} |")
    return 1 if args.check and (missed or rerun_untimed) else 0


if __name__ == "__main__":
    sys.exit(main())
