"""Shared fixtures. Integration tests against the real SLURM test cluster live in
tests/slurm/ and start the cluster themselves (scripts/test-cluster.sh start)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import corral
from corral.policy import PollPolicy

ROOT = Path(__file__).resolve().parent.parent

#: Short grace periods so that failure tests finish quickly; behaviour is otherwise default.
FAST = PollPolicy(outcome_grace=1.0, scheduler_min=0.5, scheduler_max=3.0)


@pytest.fixture
def workdir(tmp_path: Path) -> str:
    path = tmp_path / "work dir with spaces"
    return str(path)


@pytest.fixture
def make_executor(workdir: str) -> Iterator[object]:
    """Build executors on a backend with the FAST poll policy; closes them afterwards."""
    made: list[corral.Executor] = []

    def make(backend: str, **options: object) -> corral.Executor:
        cluster = corral.Cluster(corral.get_backend(backend), workdir, policy=FAST)
        executor = corral.Executor(cluster=cluster, **options)  # type: ignore[arg-type]
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.cluster.close()


@pytest.fixture(autouse=True)
def _no_inherited_job_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests themselves never run inside a corral job."""
    monkeypatch.delenv("CORRAL_IN_JOB", raising=False)
    for name in ("CORRAL_MAX_ARRAY_SIZE", "CORRAL_MAX_SUBMIT_JOBS", "CORRAL_SLOTS", "CORRAL_DIR"):
        monkeypatch.delenv(name, raising=False)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
