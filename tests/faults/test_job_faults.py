"""Faults that hit the jobs themselves, on the real SLURM test cluster: a node dying, an
external scancel, time limits with and without a checkpoint, preemption by higher-priority
work, a memory limit. Each test checks that no call is lost and none completed twice
(tests/faults/ledger.py)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

import corral
from corral.engine.policy import PollPolicy

from ..contract.test_backend_contract import time_limit_ended, time_limit_started
from ..slurm.helpers import cluster, squeue, wait_for
from .ledger import Count, assert_each_completed_once, completions, mark, release_requeued

QUICK = PollPolicy(scheduler_min=0.5, scheduler_max=2.0)


def executor(tmp_path: Path, **options: object) -> corral.Executor:
    engine = corral.Cluster(corral.get_backend("slurm"), str(tmp_path / "work"), policy=QUICK)
    return corral.Executor(cluster=engine, **options)  # type: ignore[arg-type]


def allocate(megabytes: int) -> int:
    block = bytearray(megabytes * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(20)  # the accounting plugin samples memory every 2 s
    return len(block)


def test_a_dying_node_requeues_its_jobs_and_the_map_loses_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "done"
    folder.mkdir()
    ex = executor(tmp_path)
    futures = ex._submit(mark, [((str(folder), x, 2.0), {}) for x in range(120)], 4)
    wait_for(lambda: len(os.listdir(folder)) >= 16, 120, "calls to run on every node")
    victim = squeue("-u", "root", "-t", "RUNNING", "-o", "%N").split()[0]
    assert re.fullmatch(r"n[1-4]", victim), victim
    with release_requeued() as released:
        cluster("stop-node", victim[1:])
        try:
            assert [f.result(timeout=600) for f in futures] == [x * 10 for x in range(120)]
        finally:
            cluster("start-node", victim[1:])
    assert released, "no job was requeued"
    assert_each_completed_once(str(folder), 120)


def test_an_external_scancel_fails_only_that_elements_calls_and_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "done"
    folder.mkdir()
    ex = executor(tmp_path)
    futures = ex._submit(mark, [((str(folder), x, 3.0), {}) for x in range(16)], 2)  # 8 elements
    wait_for(futures[0].running, 120, "the first element to start")
    victim = futures[0].job_id
    subprocess.run(["scancel", victim], check=True, timeout=30)
    outcomes = []
    for future in futures:
        try:
            outcomes.append(future.result(timeout=300))
        except corral.JobCancelledError as error:
            assert error.job_id == victim and "ended CANCELLED" in str(error)
            outcomes.append("cancelled")
    cancelled = [x for x, outcome in enumerate(outcomes) if outcome == "cancelled"]
    assert cancelled and set(cancelled) <= {0, 1}  # the victim's calls, no other
    assert all(outcomes[x] == x * 10 for x in range(16) if x not in cancelled)
    done = completions(str(folder))
    assert not set(cancelled) & set(done) and max(done.values()) == 1


#: A job environment with post lines, whose shell stays and hands the worker the warning,
#: and the worker as an srun step, which gets it from srun.
SET_UP = {"setup": ["export CORRAL_TEST_SETUP=1"], "post": ["echo post-ran >&2"], "srun": True}


def test_time_limits_with_and_without_a_checkpoint(tmp_path: Path) -> None:
    """Plain jobs, and jobs with setup and post lines and the worker as an srun step, side by
    side (each case takes minutes of one-minute limits: run together, they take it once)."""
    # A one-minute limit, warned 30 s before (half the limit) when SLURM's 30 s timer
    # notices: each run works 15 to 60 s, so 125 s of work needs three runs at least.
    cases = []
    backend = corral.get_backend("slurm")  # the backend contract's SLURM case, in the same minute
    contract = tmp_path / "contract"
    contract.mkdir()
    job, store = time_limit_started(backend, contract)
    with release_requeued():
        for name, environment in (("plain", {}), ("setup-post-srun", SET_UP)):
            folder = tmp_path / name
            folder.mkdir()
            ex = executor(tmp_path / f"{name}-work", time=1, max_requeues=10, **environment)
            cases.append((folder, ex.submit(Count(str(folder)), 125), ex.submit(time.sleep, 600)))
        for folder, resumable, plain in cases:
            with pytest.raises(corral.JobTimeoutError) as caught:
                plain.result(timeout=300)
            assert "time limit 0:01:00" in str(caught.value) and "no checkpoint" in str(caught.value)
            done, runs = resumable.result(timeout=600)
            assert done == 125 and runs >= 3  # two requeues at least, each resumed from its checkpoint
            assert resumable.job_id is not None and "_" in resumable.job_id  # requeued in place
            assert completions(str(folder)) == {125: 1}  # it completed once, in its last run
    time_limit_ended(backend, job, store)
    backend.close()


def test_preempted_jobs_are_requeued_and_the_map_returns_everything(tmp_path: Path) -> None:
    """Two maps side by side (each waits out a preemption: together they wait once). With
    setup and post lines SLURM requeues the preempted jobs, as without; with the worker as an
    srun step, SLURM cancels the step and fails the job, and corral reads the step's end as a
    preemption and runs the calls again."""
    cases = {}
    for name, environment in (
        ("setup-post", {"setup": SET_UP["setup"], "post": SET_UP["post"]}),
        ("srun-step", {"srun": True}),
    ):
        folder = tmp_path / name
        folder.mkdir()
        # Four at a time each, so the two maps hold the cluster's eight CPUs half and half.
        ex = executor(tmp_path / f"{name}-work", max_running=4, **environment)
        # One call per element, longer than the partition's GraceTime (5 s): SLURM lets a
        # victim run that long, then sends SIGTERM, kills it and requeues it.
        cases[name] = (folder, ex._submit(mark, [((str(folder), x, 12.0), {}) for x in range(8)], 1))
    futures = [f for _, fs in cases.values() for f in fs]
    wait_for(lambda: sum(f.running() for f in futures) >= 8, 120, "the two maps to fill the cluster")
    with release_requeued() as released:
        argv = ["sbatch", "--parsable", "-p", "urgent", "--array=0-7", "--output=/dev/null"]
        urgent = subprocess.run(
            [*argv, "--wrap", "sleep 5"], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
        for _, fs in cases.values():
            assert [f.result(timeout=600) for f in fs] == [x * 10 for x in range(8)]
    folder, fs = cases["setup-post"]
    records = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-D", "-j", str(fs[0].job_id).split("_")[0], "-o", "JobID,State"],
        capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    assert released, "nothing was preempted and requeued"
    assert "PREEMPTED" in records or "REQUEUED" in records, records
    arrays = {str(f.job_id).split("_")[0] for f in cases["srun-step"][1]}
    assert len(arrays) > 1, "no call of the srun map was submitted again"  # its last run is another array's
    assert squeue("-j", urgent, "-t", "PD,R") == ""
    for folder, _ in cases.values():
        assert_each_completed_once(str(folder), 8)


def test_a_call_over_its_memory_gets_an_out_of_memory_error_with_the_figures(tmp_path: Path) -> None:
    ex = executor(tmp_path, memory="100M", max_retries=0)
    future = ex.submit(allocate, 300)
    with pytest.raises(corral.JobOutOfMemoryError) as caught:
        future.result(timeout=120)
    message = str(caught.value)
    assert re.search(r"used 3\d\d MB of memory, 100 MB requested", message), message
    assert "ended OUT_OF_MEMORY" in message
