"""Fixtures of the SLURM tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def no_cluster_env(monkeypatch):
    """slurm/config.yaml reads these variables: start from none of them set."""
    for name in ("SLURM_ACCOUNT", "SLURM_PARTITION", "SLURM_GPU_PARTITION", "SLURM_GPU_MODEL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch
