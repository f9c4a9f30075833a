"""Shared fixtures. Integration tests against the real SLURM test cluster live in
tests/slurm/ and start the cluster themselves (scripts/test-cluster.sh start)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import corral
import corral.config
import corral.engine.budget
import corral.frontends.barrier
from corral.engine.policy import PollPolicy

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
def _no_inherited_job_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests themselves never run inside a corral job, and each starts from a clean
    configuration: no user config file, no CORRAL_* settings, nothing set_defaults set, and
    a fresh submission budget (each test is its own little process, as far as corral knows)."""
    monkeypatch.delenv("CORRAL_IN_JOB", raising=False)
    for name in ("CORRAL_MAX_ARRAY_SIZE", "CORRAL_MAX_SUBMIT_JOBS", "CORRAL_SLOTS", *CONFIG_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    corral.config.reset_defaults()
    corral.engine.budget.reset()
    corral.frontends.barrier.reset()  # no corral.join() of another test


#: The environment variables corral's configuration reads (see docs/configuration.md).
CONFIG_ENV = (
    "CORRAL_DIR", "CORRAL_BACKEND", "CORRAL_PROFILE", "CORRAL_MAX_RETRIES", "CORRAL_SUBMIT_BUDGET",
    "CORRAL_TIME", "CORRAL_CPUS", "CORRAL_MEMORY", "CORRAL_GPUS", "CORRAL_NODES", "CORRAL_TASKS",
    "CORRAL_PARTITION", "CORRAL_ACCOUNT", "CORRAL_QOS", "CORRAL_CONSTRAINT", "CORRAL_JOB_NAME",
    "CORRAL_MAX_REQUEUES", "CORRAL_SIGNAL_GRACE", "CORRAL_PYTHON", "CORRAL_HOST", "CORRAL_CLUSTERS",
)  # fmt: skip
