"""Run the real workflow with the project's Snakemake in a scratch directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = Path(__file__).with_name("tiny.yaml")


def env() -> dict:
    """The venv's bin first on PATH, so rules find `clipmerge`; a private MLflow store per run."""
    environ = dict(os.environ)
    environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environ['PATH']}"
    environ.pop("MLFLOW_TRACKING_URI", None)
    return environ


def snakemake(workdir, *args, configfile=TINY_CONFIG, check=True, timeout=1800) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env(), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc


def planned_jobs(workdir, *args, configfile=TINY_CONFIG) -> dict[str, int]:
    """{rule: count} of the jobs a dry run would execute (parsed from Snakemake's job stats)."""
    proc = snakemake(workdir, "-n", *args, configfile=configfile)
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    stats = text.split("Job stats:", 1)[1]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.M))
    jobs.pop("total", None)
    return {rule: int(n) for rule, n in jobs.items()}
