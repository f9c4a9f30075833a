"""Integration tests against the real SLURM test cluster, which these fixtures start
(scripts/test-cluster.sh start: idempotent, about a second when it already runs)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from benchmarks.shims import CommandLog

from .helpers import cluster


@pytest.fixture(scope="session", autouse=True)
def slurm_cluster() -> None:
    """The real cluster must be up: a cluster that cannot start fails the tests, never skips."""
    cluster("start")


@pytest.fixture
def commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CommandLog:
    """Every scheduler command corral runs during the test, counted through PATH shims."""
    log = CommandLog(tmp_path / "shims")
    monkeypatch.setenv("PATH", log.path)
    return log


@pytest.fixture
def fresh_queue() -> Iterator[None]:
    """Leave nothing of ours in the queue for the next test."""
    yield
    subprocess.run(["scancel", "-u", "root"], timeout=30, check=False)
