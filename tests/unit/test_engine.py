"""The engine's decisions on a scripted SLURM (tests/unit/fakes.py): bulk status queries,
rollback of a refused batch, MaxSubmitJobs deferral, and LOST jobs."""

from __future__ import annotations

import time

import pytest

import corral
from corral.backends.slurm import SlurmBackend
from corral.engine.policy import PollPolicy

from .fakes import FakeSlurm

QUICK = PollPolicy(
    files_min=0.01, files_max=0.05, scheduler_min=0.05, scheduler_max=0.05, outcome_grace=0.2, lost_after=0.5
)


def square(x: int) -> int:
    return x * x


def executor(
    transport: FakeSlurm, workdir: str, policy: PollPolicy = QUICK, **options: object
) -> corral.Executor:
    cluster = corral.Cluster(SlurmBackend(transport), workdir, policy=policy)
    return corral.Executor(cluster=cluster, **options)  # type: ignore[arg-type]


def test_one_status_query_per_interval_whatever_the_number_of_jobs(workdir) -> None:
    counts = {}
    for n_batches in (1, 30):
        fake = FakeSlurm(run_jobs=False)
        # Jobs that stay pending count as quiet (their streams will show them start): the
        # quiet interval is the one measured here.
        policy = PollPolicy(scheduler_min=0.2, scheduler_max=0.2, scheduler_quiet=0.2, jitter=0.0)
        ex = executor(fake, workdir, policy)
        for _ in range(n_batches):
            ex._submit(square, [((i,), {}) for i in range(20)], 1)
        fake.calls.clear()
        time.sleep(1.5)
        squeues = [argv for argv in fake.calls if argv[0] == "squeue"]
        counts[n_batches] = len(squeues)
        assert all(len(argv[argv.index("-j") + 1].split(",")) == n_batches for argv in squeues)
        ex.cancel_all()
    assert 5 <= counts[1] <= 9 and abs(counts[30] - counts[1]) <= 2, counts


def test_no_sacct_while_squeue_knows_the_jobs(workdir) -> None:
    fake = FakeSlurm()
    ex = executor(fake, workdir)
    assert list(ex.map(square, range(50))) == [x * x for x in range(50)]
    assert "sacct" not in fake.names()


def test_a_refused_submission_cancels_the_parts_already_submitted(workdir, monkeypatch) -> None:
    monkeypatch.setenv("CORRAL_MAX_ARRAY_SIZE", "4")
    fake = FakeSlurm(run_jobs=False, fail_sbatch_after=1)
    ex = executor(fake, workdir)
    with pytest.raises(corral.SubmissionError, match="Invalid partition name"):
        ex.map(square, range(10), chunksize=1)
    assert fake.names().count("sbatch") == 2
    assert ["scancel", "100"] in fake.calls
    assert fake.queued() == 0


def test_max_submit_jobs_defers_submissions_until_there_is_room(workdir, monkeypatch) -> None:
    monkeypatch.setenv("CORRAL_MAX_SUBMIT_JOBS", "4")
    fake = FakeSlurm()
    fake.run_jobs = False
    ex = executor(fake, workdir)
    results = ex.map(square, range(10), chunksize=1)
    assert fake.names().count("sbatch") == 1  # 4 elements now, 6 deferred
    fake.run_jobs = True
    for job in list(fake.jobs):  # let the first array run
        from corral.worker.run import run_element

        for index in range(4):
            batch = ex._batches[0]
            run_element(batch.store.path, 0, index, f"{job}_{index}")
            fake.jobs[job][index] = "COMPLETED"
    assert list(results) == [x * x for x in range(10)]
    assert fake.names().count("sbatch") == 3  # 4 + 4 + 2
    assert fake.max_queued <= 4


def test_a_job_the_scheduler_forgot_is_lost_not_waited_for(workdir) -> None:
    fake = FakeSlurm(run_jobs=False, forget=True)
    ex = executor(fake, workdir)
    future = ex.submit(square, 3)
    with pytest.raises(corral.JobLostError, match="ended LOST"):
        future.result(timeout=30)
    assert future.state is corral.JobState.LOST


def test_pending_elements_cancelled_from_outside_are_not_waited_for(workdir) -> None:
    # SLURM forgets an array element cancelled before it started: no squeue line, no sacct row.
    fake = FakeSlurm(run_jobs=False)
    ex = executor(fake, workdir, PollPolicy(scheduler_min=0.05, scheduler_max=0.05, outcome_grace=0.2))
    futures = ex._submit(square, [((i,), {}) for i in range(4)], 1)  # 4 elements, one call each
    job = futures[0].job_id.split("_")[0]
    fake.jobs[job] = ["CANCELLED", "CANCELLED"]  # elements 2 and 3 vanished while pending
    for future in futures:
        with pytest.raises(corral.JobCancelledError, match="ended CANCELLED"):
            future.result(timeout=10)  # far sooner than lost_after (120 s)
    assert "cancelled before it started" in str(futures[3].exception())
