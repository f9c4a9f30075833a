"""The contract every scheduler backend honours, run against each of them: local here, the
real SLURM test cluster (started by tests/slurm/helpers.cluster) and the real SGE test cell
(tests/sge/helpers.cell). A new backend joins by adding its name to schedulers.BACKENDS."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import corral
from corral import JobState, Resources
from corral.backends.base import ArraySpec, Backend
from corral.engine.planning import Plan
from corral.store.batch import BatchStore
from corral.worker.run import pack_function

from ..unit.fakes import outcomes
from .schedulers import BACKENDS, start

#: The shortest time limit each backend enforces: SLURM counts whole minutes; SGE's h_rt is
#: in seconds and its execd checks it about every second.
SHORTEST_LIMIT = {"local": timedelta(seconds=2), "slurm": timedelta(minutes=1), "sge": timedelta(seconds=3)}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    start(request.param)
    made = corral.get_backend(request.param)
    yield made
    made.close()


def submit(
    backend: Backend, tmp_path: Path, fn: Callable[..., Any], args: list[Any], **options: Any
) -> tuple[str, BatchStore]:
    """Submit one static array, one call per element, through the backend alone."""
    max_running = options.pop("max_running", None)
    store = BatchStore.create(str(tmp_path / "work"), "contract", backend.transport)
    store.write_batch({}, pack_function(fn), [cloudpickle.dumps(((a,), {})) for a in args])
    plan = Plan(0, len(args), "static", ((0, len(args), 0),), chunk=1)
    spec = ArraySpec(
        store.path, 0, len(args), Resources.from_options(**options), "corral-contract", sys.executable,
        str(tmp_path), max_running,
    )  # fmt: skip
    script = store.write_submission(0, plan.worker_plan(), backend.render(spec))
    patterns = (store.element_log_pattern(s, "{job}", "{index}") for s in ("out", "err"))
    return backend.submit(spec, script, tuple(patterns)), store  # type: ignore[arg-type]


def states(backend: Backend, job: str, n: int) -> list[JobState | None]:
    found = backend.poll([job])
    return [found[f"{job}_{i}"].state if f"{job}_{i}" in found else None for i in range(n)]


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def square(x: int) -> int:
    return x * x


def die(code: int) -> None:
    os._exit(code)


def test_an_array_runs_every_element_to_completed(backend: Backend, tmp_path: Path) -> None:
    job, store = submit(backend, tmp_path, square, [1, 2, 3])
    wait_until(lambda: states(backend, job, 3) == [JobState.COMPLETED] * 3, 120, "COMPLETED")
    found = outcomes(store)  # read from the elements' streams, as the client reads them
    assert set(found) == {(0, 0), (1, 0), (2, 0)}
    assert cloudpickle.loads(found[(2, 0)].payload) == 9


def test_an_element_whose_process_fails_is_failed(backend: Backend, tmp_path: Path) -> None:
    job, _ = submit(backend, tmp_path, die, [3])
    wait_until(lambda: states(backend, job, 1) == [JobState.FAILED], 120, "FAILED")


#: SLURM counts limits in whole minutes and notices them on a 30 s timer, so its case takes
#: 90 s alone: it runs beside the fault tests' time-limit cases, which wait out the same
#: minute (tests/faults/test_job_faults.py, through `time_limit_started` and `time_limit_ended`).
@pytest.mark.parametrize("backend", [name for name in BACKENDS if name != "slurm"], indirect=True)
def test_the_time_limit_is_enforced(backend: Backend, tmp_path: Path) -> None:
    job, store = time_limit_started(backend, tmp_path)
    time_limit_ended(backend, job, store)


def time_limit_started(backend: Backend, tmp_path: Path) -> tuple[str, BatchStore]:
    """A call of 600 s under the backend's shortest limit."""
    return submit(backend, tmp_path, time.sleep, [600], time=SHORTEST_LIMIT[backend.name])


def time_limit_ended(backend: Backend, job: str, store: BatchStore) -> None:
    """The scheduler ended it TIMEOUT, and it left no outcome."""
    limit = SHORTEST_LIMIT[backend.name].total_seconds()
    wait_until(lambda: states(backend, job, 1) == [JobState.TIMEOUT], limit + 120, "TIMEOUT")
    assert outcomes(store) == {}


def test_throttle_then_widen_and_cancel(backend: Backend, tmp_path: Path) -> None:
    job, _ = submit(backend, tmp_path, time.sleep, [600] * 2, max_running=1)  # two slots suffice
    wait_until(lambda: JobState.RUNNING in states(backend, job, 2), 60, "one element to run")
    time.sleep(2)  # long enough for a scheduler that ignores the throttle to start the other
    assert states(backend, job, 2) == [JobState.RUNNING, JobState.PENDING]
    backend.widen(job, 2)
    wait_until(lambda: states(backend, job, 2) == [JobState.RUNNING] * 2, 60, "both to run")
    backend.cancel([job])
    wait_until(lambda: states(backend, job, 2) == [JobState.CANCELLED] * 2, 60, "CANCELLED")


def test_cancelling_pending_elements_leaves_running_ones(backend: Backend, tmp_path: Path) -> None:
    job, _ = submit(backend, tmp_path, time.sleep, [600] * 2, max_running=1)
    wait_until(lambda: states(backend, job, 2)[0] is JobState.RUNNING, 60, "the first element to run")
    backend.cancel([job], pending_only=True)
    # A pending element cancelled before it started is CANCELLED, or gone (SLURM drops it).
    wait_until(lambda: states(backend, job, 2)[1] in (JobState.CANCELLED, None), 30, "the pending one to go")
    assert states(backend, job, 2)[0] is JobState.RUNNING
    backend.cancel([job])


def test_an_unknown_job_is_simply_not_reported(backend: Backend) -> None:
    assert backend.poll(["999999"]) == {}
    backend.cancel(["999999"])  # cancelling what is gone is not an error
