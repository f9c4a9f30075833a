"""Resubmission: the retry decision as a table, then the engine resubmitting only the calls
that failed (on a scripted SLURM and on the local backend), and scheduler commands retried
while the controller is out of reach."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

import corral
from corral.backends import base
from corral.backends.slurm import SlurmBackend
from corral.errors import JobError, job_error
from corral.job import JobState
from corral.resources import Resources
from corral.retry import RetryPolicy

from .fakes import FakeSlurm
from .test_engine import executor, square


def error(state: JobState) -> JobError:
    return job_error(state, job_id="1_0", call=0, batch="b")


TWO_MIN = Resources(time=timedelta(minutes=2), memory=1000)


@pytest.mark.parametrize(
    ("failure", "policy", "expected"),
    [
        (error(JobState.NODE_FAIL), RetryPolicy(), TWO_MIN),
        (error(JobState.BOOT_FAIL), RetryPolicy(), TWO_MIN),
        (error(JobState.PREEMPTED), RetryPolicy(), TWO_MIN),
        (error(JobState.LOST), RetryPolicy(), TWO_MIN),
        (error(JobState.COMPLETED), RetryPolicy(), TWO_MIN),  # ended fine, yet no outcome
        (error(JobState.FAILED), RetryPolicy(), None),  # the worker itself died: the call's doing
        (error(JobState.CANCELLED), RetryPolicy(), None),  # somebody meant it
        (error(JobState.TIMEOUT), RetryPolicy(), None),
        (
            error(JobState.TIMEOUT),
            RetryPolicy(time_factor=2),
            Resources(time=timedelta(minutes=4), memory=1000),
        ),
        (error(JobState.OUT_OF_MEMORY), RetryPolicy(), None),
        (
            error(JobState.OUT_OF_MEMORY),
            RetryPolicy(memory_factor=1.5),
            Resources(time=TWO_MIN.time, memory=1500),
        ),
        (ValueError("x"), RetryPolicy(), None),
        (ValueError("x"), RetryPolicy(retry_on=(ValueError,)), TWO_MIN),
        (KeyError("x"), RetryPolicy(retry_on=(ValueError,)), None),
        (error(JobState.FAILED), RetryPolicy(retry_on=(corral.JobFailedError,)), TWO_MIN),
        (error(JobState.NODE_FAIL), RetryPolicy(max_retries=0), None),
    ],
)
def test_which_failures_are_retried_and_with_what(
    failure: BaseException, policy: RetryPolicy, expected: Resources | None
) -> None:
    assert policy.next_resources(failure, 1, TWO_MIN) == expected


def test_a_call_its_element_never_reached_before_the_time_limit_runs_again_as_is() -> None:
    policy = RetryPolicy()
    assert policy.next_resources(error(JobState.TIMEOUT), 1, TWO_MIN, started=False) == TWO_MIN
    assert policy.next_resources(error(JobState.TIMEOUT), 1, TWO_MIN, started=True) is None
    assert policy.next_resources(error(JobState.FAILED), 1, TWO_MIN, started=False) is None
    assert policy.next_resources(error(JobState.CANCELLED), 1, TWO_MIN, started=False) is None
    assert (
        RetryPolicy(max_retries=0).next_resources(error(JobState.TIMEOUT), 1, TWO_MIN, started=False) is None
    )


def test_retries_run_out() -> None:
    policy = RetryPolicy(max_retries=2)
    assert policy.next_resources(error(JobState.NODE_FAIL), 2, TWO_MIN) == TWO_MIN
    assert policy.next_resources(error(JobState.NODE_FAIL), 3, TWO_MIN) is None


def test_no_time_limit_means_nothing_to_grow() -> None:
    assert RetryPolicy(time_factor=2).next_resources(error(JobState.TIMEOUT), 1, Resources()) is None


@pytest.mark.parametrize(
    "options",
    [
        {"max_retries": -1},
        {"max_retries": 1.5},
        {"retry_on": (42,)},
        {"time_factor": 0.5},
        {"memory_factor": "2"},
    ],
)
def test_bad_retry_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(corral.CorralError):
        RetryPolicy(**options)  # type: ignore[arg-type]


def test_calls_on_a_failed_node_are_resubmitted_alone(workdir: str) -> None:
    fake = FakeSlurm(node_fail=1)  # the first element takes call 0 and dies with its node
    ex = executor(fake, workdir)
    futures = ex._submit(square, [((i,), {}) for i in range(6)], 1)
    assert [f.result(timeout=30) for f in futures] == [0, 1, 4, 9, 16, 25]
    batch = Path(workdir) / futures[0].batch
    attempt = json.loads((batch / "attempts" / "0.0.json").read_text())
    assert os.listdir(batch / "attempts") == ["0.0.json"]
    assert attempt["state"] == "NODE_FAIL" and attempt["node"] == "n1" and attempt["job_id"] == "100_0"
    # One chunk claim per static element of submission 0, and the resubmission's one.
    assert sorted(os.listdir(batch / "claims")) == ["0.0", "0.1", "0.2", "0.3", "0.4", "0.5", "1.0"]
    resubmitted = json.loads((batch / "subs" / "1.json").read_text())
    assert resubmitted["tasks"] == [[0, 1, 1]]  # only the failed call (one run of 1), at its next attempt
    assert "--array=0-0" in (batch / "subs" / "1.sh").read_text()
    assert futures[0].job_id == "101_0"


def test_when_retries_run_out_the_error_lists_every_attempt(workdir: str) -> None:
    fake = FakeSlurm(node_fail=100)
    ex = executor(fake, workdir, max_retries=2)
    future = ex.submit(square, 3)
    with pytest.raises(corral.NodeFailureError) as caught:
        future.result(timeout=30)
    message = str(caught.value)
    assert "tried 3 times" in message
    for n in (1, 2, 3):
        assert f"attempt {n}: job " in message
    assert message.count("NODE_FAIL on n1") == 4  # the headline and three attempts
    assert len(caught.value.attempts) == 3 and future.batch in caught.value.work_dir
    assert fake.names().count("sbatch") == 3


def flaky(marker: str) -> str:
    """Fails on its first run, succeeds on the second (the marker file remembers)."""
    if not os.path.exists(marker):
        Path(marker).write_text("ran")
        raise ConnectionError("the license server hiccuped")
    return "second time lucky"


def test_a_user_exception_is_retried_only_when_asked(make_executor, tmp_path: Path) -> None:
    ex = make_executor("local")
    with pytest.raises(ConnectionError, match="hiccuped"):
        ex.submit(flaky, str(tmp_path / "a")).result(timeout=60)
    patient = make_executor("local", retry_on=ConnectionError)
    future = patient.submit(flaky, str(tmp_path / "b"))
    assert future.result(timeout=60) == "second time lucky"
    attempts = os.listdir(Path(patient.cluster.root) / future.batch / "attempts")
    assert attempts == ["0.0.json"]


def test_a_user_exception_that_keeps_failing_lists_its_attempts(make_executor) -> None:
    ex = make_executor("local", retry_on=(ZeroDivisionError,), max_retries=1)
    with pytest.raises(ZeroDivisionError) as caught:
        ex.submit(divmod, 1, 0).result(timeout=60)
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "tried 2 times" in notes and "raised ZeroDivisionError" in notes


def test_a_time_limit_is_grown_when_asked(make_executor) -> None:
    ex = make_executor("local", time=timedelta(seconds=1), time_factor=3)
    future = ex.submit(time.sleep, 1.5)
    assert future.result(timeout=60) is None
    attempts = Path(ex.cluster.root) / future.batch / "attempts"
    assert json.loads((attempts / "0.0.json").read_text())["state"] == "TIMEOUT"
    strict = make_executor("local", time=timedelta(seconds=1))
    with pytest.raises(corral.JobTimeoutError):
        strict.submit(time.sleep, 1.5).result(timeout=60)


def test_sbatch_is_retried_while_the_controller_is_down(workdir: str, monkeypatch) -> None:
    monkeypatch.setattr(base, "RETRY_PAUSES", (0.01, 0.01, 0.01))
    fake = FakeSlurm(down_for=2)
    ex = executor(fake, workdir)
    assert list(ex.map(square, range(5))) == [0, 1, 4, 9, 16]
    assert fake.names().count("sbatch") == 3


def test_a_controller_down_for_good_is_a_clear_transient_error(workdir: str, monkeypatch) -> None:
    monkeypatch.setattr(base, "RETRY_PAUSES", (0.01,))
    fake = FakeSlurm(down_for=10)
    ex = executor(fake, workdir)
    future = ex.submit(square, 1)  # sent when its burst of submits ends: the error is the future's
    with pytest.raises(corral.SubmissionError, match="Unable to contact slurm controller") as caught:
        future.result(timeout=30)
    assert caught.value.transient and fake.names().count("sbatch") == 2


def test_slurmdbd_away_leaves_squeue_answers_standing(monkeypatch) -> None:
    monkeypatch.setattr(base, "RETRY_PAUSES", (0.01,))
    fake = FakeSlurm(run_jobs=False)
    fake._sacct = lambda argv: (1, "", "sacct: error: Sending PersistInit msg: Connection refused\n")  # type: ignore[method-assign]
    assert SlurmBackend(fake).poll(["4242"]) == {}  # gone from squeue, sacct away: no error
