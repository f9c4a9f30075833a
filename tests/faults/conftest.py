"""The fault-injection suite runs on the real SLURM test cluster, which these fixtures start."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from ..slurm.helpers import cluster


@pytest.fixture(scope="session", autouse=True)
def slurm_cluster() -> None:
    """The real cluster must be up: a cluster that cannot start fails the tests, never skips."""
    cluster("start")


@pytest.fixture(autouse=True)
def fresh_queue() -> Iterator[None]:
    """Leave nothing of ours in the queue, and every node up, for the next test."""
    yield
    subprocess.run(["scancel", "-u", "root"], timeout=30, check=False)
