"""The whole engine on the real SGE test cell (one host, queue all.q with 4 slots)."""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import cloudpickle
import pytest

import corral
from corral import JobState, Resources
from corral.backends.base import ArraySpec
from corral.backends.sge import SgeBackend
from corral.engine.planning import Plan
from corral.job import element_id
from corral.store.batch import BatchStore
from corral.transports.local import LocalTransport
from corral.worker.run import pack_function


def square_where(x: int) -> tuple[int, str]:
    return x * x, os.environ["JOB_ID"]  # set by SGE in every job


def test_map_over_50_returns_every_result_in_order(workdir: str) -> None:
    with corral.Executor(backend="sge", directory=workdir) as ex:
        results = list(ex.map(square_where, range(50)))
    assert [r[0] for r in results] == [x * x for x in range(50)]
    assert all(job.isdigit() for _, job in results)


def slots_and_queue() -> tuple[str, str]:
    return os.environ["NSLOTS"], os.environ["QUEUE"]


def test_cpus_ask_for_slots_of_the_smp_parallel_environment_and_partition_is_the_queue(make_executor) -> None:
    ex = make_executor("sge", cpus=2, partition="all.q")
    assert ex.submit(slots_and_queue).result(timeout=120) == ("2", "all.q")


def environment() -> tuple[str | None, str | None, str | None]:
    return os.environ.get("CLIENT_SIDE"), os.environ.get("STAGE"), os.environ.get("FROM_SETUP")


def test_jobs_get_the_submitting_environment_and_the_jobs_own(make_executor, monkeypatch) -> None:
    """-V, as SLURM passes the environment on; then setup, env and post apply as anywhere."""
    monkeypatch.setenv("CLIENT_SIDE", "here")
    ex = make_executor("sge", setup=["export FROM_SETUP=yes"], env={"STAGE": "sge"}, post=["true"])
    assert ex.submit(environment).result(timeout=120) == ("here", "sge", "yes")


def test_a_call_past_its_time_limit_raises_job_timeout_error(make_executor) -> None:
    ex = make_executor("sge", time=timedelta(seconds=5))
    future = ex.submit(time.sleep, 600)
    with pytest.raises(corral.JobTimeoutError, match="TIMEOUT") as info:
        future.result(timeout=120)
    assert future.state is JobState.TIMEOUT and info.value.state is JobState.TIMEOUT
    assert "h_rt=5" in info.value.reason


def test_a_call_past_its_memory_limit_raises_job_out_of_memory_error(make_executor) -> None:
    # h_vmem caps each process's address space; SGE also kills the job when the sum of its
    # processes passes it: two children of 150 MB under a 300 MB limit do.
    ex = make_executor("sge", memory="300M")
    future = ex.submit(_two_children_of, 150)
    with pytest.raises(corral.JobOutOfMemoryError):
        future.result(timeout=120)


def _two_children_of(megabytes: int) -> None:
    import subprocess

    code = f"import time; b = bytearray({megabytes} << 20); time.sleep(60)"
    children = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    for child in children:
        child.wait()


def test_element_logs_are_0_based_and_a_worker_that_cannot_start_says_why(tmp_path: Path) -> None:
    backend = SgeBackend(LocalTransport())
    store = BatchStore.create(str(tmp_path / "work dir"), "logs", backend.transport)
    store.write_batch({}, pack_function(print), [cloudpickle.dumps(((i,), {})) for i in range(2)])
    plan = Plan(0, 2, "static", ((0, 2, 0),), chunk=1)
    spec = ArraySpec(store.path, 0, 2, Resources(), "logs", "/no/such/python", str(tmp_path))
    script = store.write_submission(0, plan.worker_plan(), backend.render(spec))
    patterns = (
        store.element_log_pattern("out", "{job}", "{index}"),
        store.element_log_pattern("err", "{job}", "{index}"),
    )
    job = backend.submit(spec, script, patterns)
    deadline = time.monotonic() + 60
    while [s.state for s in backend.poll([job]).values()] != [JobState.FAILED] * 2:
        assert time.monotonic() < deadline, backend.poll([job])
        time.sleep(0.2)
    for index in range(2):
        assert "/no/such/python" in store.read_text(store.element_log(element_id(job, index), "err"))
    # SGE's own stream files (1-based) were empty, so the job removed them
    assert sorted(os.listdir(os.path.join(store.path, "logs"))) == sorted(
        f"job-{job}_{i}.{s}" for i in range(2) for s in ("out", "err")
    )
