"""Reliability tests: preemption through Snakemake, atomic writes, bad inputs, parallel runs, no pickles,
MLflow on localhost."""

import sys
from pathlib import Path

# snakemake_runner (the real workflow in a scratch dir) lives beside the workflow tests, as a plain module.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
