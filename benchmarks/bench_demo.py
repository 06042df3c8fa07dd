"""The embedded demo from clean: wall and CPU time, and where the time goes, from Snakemake's benchmarks.

Runs ``snakemake --cores N`` with ``config/config.yaml`` in a fresh working directory (nothing cached)
and prints:

- wall time and the CPU time of every process it started (user + sys of the waited-for children),
  and of the Snakemake process alone;
- per stage (a model kind, or a rule: ``clipmerge.reporting.results.stage_of``) the jobs, the sum of
  their wall seconds ("job-seconds") and CPU seconds, from the ``benchmark:`` file of every job;
- the ratio of the run's wall time to the sum of the jobs' own wall time (< 1: jobs ran side by side);
- the load average before and after, since other work on the machine inflates every figure.

    .venv/bin/python benchmarks/bench_demo.py [--cores 2] [--workdir DIR] [--keep] [--configfile FILE]

``--configfile`` times a variant of the demo (e.g. with the task-vector merges on) the same way.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clipmerge import layout
from clipmerge.reporting.results import read_benchmark, stage_of

REPO = Path(__file__).resolve().parents[1]


def own_cpu_seconds(pid: int) -> float | None:
    """utime + stime of process ``pid`` itself (not its children), from /proc; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_demo(workdir: Path, cores: int, configfile: Path) -> tuple[float, float, float]:
    """Run the demo in ``workdir``; (wall seconds, CPU seconds of every process it started, CPU seconds
    of the Snakemake process itself: scheduling, file checks and job bookkeeping)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(configfile), "--cores", str(cores)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    with open(workdir.parent / f"{workdir.name}.snakemake.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        snakemake_cpu = 0.0
        while proc.poll() is None:  # the last reading before exit: within 0.5 s of its total
            snakemake_cpu = own_cpu_seconds(proc.pid) or snakemake_cpu
            time.sleep(0.5)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"the demo failed ({proc.returncode}): see {log.name}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, snakemake_cpu


def stage_costs(workdir: Path) -> dict[str, tuple[int, float, float]]:
    """``{stage: (jobs, job-seconds, CPU seconds)}`` from the study's benchmark files."""
    costs: dict[str, tuple[int, float, float]] = {}
    for path in sorted((workdir / layout.study_dir("demo") / "benchmarks").rglob("*.tsv")):
        job = read_benchmark(path)
        jobs, wall, cpu = costs.get(stage_of(path), (0, 0.0, 0.0))
        costs[stage_of(path)] = (jobs + 1, wall + job.wall_s, cpu + job.cpu_s)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="fresh directory to run in (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--configfile", type=Path, default=REPO / "config" / "config.yaml",
                        help="the config to run (default: the demo's; its study must be 'demo')")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_demo."))
    if workdir.exists() and any(workdir.iterdir()):
        sys.exit(f"{workdir}: not empty; the demo must run from clean")
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    try:
        wall, cpu, snakemake_cpu = run_demo(workdir, args.cores, args.configfile.resolve())
        costs = stage_costs(workdir)
        table = (workdir / layout.table("md", study="demo")).read_text()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()

    job_seconds = sum(wall_s for _, wall_s, _ in costs.values())
    print(f"machine: {os.cpu_count()} CPUs; load average (1, 5, 15 min) before {load_before}, after {load_after}")
    print(f"demo workflow: {wall:.1f} s wall, {cpu:.1f} s CPU ({cpu / 60:.1f} CPU-minutes), "
          f"{sum(j for j, _, _ in costs.values())} jobs, --cores {args.cores}")
    print(f"targets (issue 13): wall <= 300 s {'met' if wall <= 300 else 'MISSED'}, "
          f"CPU <= 8 min {'met' if cpu <= 480 else 'MISSED'}")
    print(f"the Snakemake process itself: {snakemake_cpu:.1f} CPU-s (scheduling, file checks, bookkeeping)")
    print(f"{'stage':<22}{'jobs':>6}{'job-s':>10}{'cpu-s':>10}")
    for stage, (jobs, wall_s, cpu_s) in sorted(costs.items(), key=lambda kv: -kv[1][1]):
        print(f"{stage:<22}{jobs:>6}{wall_s:>10.1f}{cpu_s:>10.1f}")
    print(f"sum of job-seconds {job_seconds:.1f}; wall / job-seconds = {wall / job_seconds:.3f}")
    print(table)
    if args.keep:
        print(f"kept {workdir}")


if __name__ == "__main__":
    main()
