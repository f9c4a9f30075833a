"""The local backend keeps dependencies as a scheduler would: an element waits until every
element it names has ended, runs when they ended as its condition asks, and is CANCELLED
("dependency never satisfied") when one did not. Elements here are plain bash scripts."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from corral.backends.base import ArraySpec
from corral.backends.local import LocalBackend
from corral.errors import SubmissionError
from corral.job import Condition, Dependency, ElementStatus, JobState
from corral.resources import Resources

TIMEOUT = 30.0


class Jobs:
    """Submits bash bodies as arrays to one LocalBackend; each element sees $STAMPS, a
    folder where it may leave time stamps (nanoseconds since the epoch)."""

    def __init__(self, backend: LocalBackend, root: Path) -> None:
        self.backend = backend
        self.root = root
        self.stamps = root / "stamps"
        self.stamps.mkdir()
        (root / "logs").mkdir()
        self._count = 0

    def submit(
        self,
        body: str,
        *,
        elements: int = 1,
        after: Sequence[str] = (),
        condition: Condition = Condition.OK,
    ) -> str:
        self._count += 1
        script = self.root / f"job{self._count}.sh"
        script.write_text(f"#!/bin/bash\nSTAMPS={self.stamps}\n{body}\n")
        spec = ArraySpec(
            batch_dir=str(self.root),
            sub=self._count,
            elements=elements,
            resources=Resources(),
            job_name=f"job{self._count}",
            python=sys.executable,
            chdir=str(self.root),
            dependency=Dependency(condition, tuple(after)) if after else None,
        )
        logs = (str(self.root / "logs" / "{job}_{index}.out"), str(self.root / "logs" / "{job}_{index}.err"))
        return self.backend.submit(spec, str(script), logs)

    def statuses(self, *job_ids: str) -> dict[str, ElementStatus]:
        return self.backend.poll(list(job_ids))

    def states(self, *job_ids: str) -> dict[str, JobState]:
        return {eid: s.state for eid, s in self.statuses(*job_ids).items()}

    def wait(self, what: Callable[[], bool], message: str = "") -> None:
        deadline = time.monotonic() + TIMEOUT
        while not what():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting: {message or what}")
            time.sleep(0.02)

    def final(self, *job_ids: str) -> dict[str, ElementStatus]:
        """Wait until every element of these jobs is final; their statuses."""
        self.wait(lambda: all(s.state.is_final for s in self.statuses(*job_ids).values()), f"{job_ids} final")
        return self.statuses(*job_ids)

    def state(self, element: str) -> JobState:
        return self.statuses(element.split("_")[0])[element].state

    def stamp(self, name: str) -> int:
        return int((self.stamps / name).read_text())

    def stamped(self, name: str) -> bool:
        return (self.stamps / name).exists()


STAMP = 'date +%s%N > "$STAMPS/$1"'  # a function body: stamp NAME


def body(*lines: str) -> str:
    return "\n".join([f"stamp() {{ {STAMP}; }}", *lines])


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[Jobs]:
    backend = LocalBackend(slots=4)
    yield Jobs(backend, tmp_path)
    backend.close()


def test_ok_runs_only_after_its_dependency_ended(jobs: Jobs) -> None:
    a = jobs.submit(body('until [[ -e "$STAMPS/release" ]]; do sleep 0.02; done', "stamp a-end", "exit 0"))
    b = jobs.submit(body("stamp b-start"), after=[a])
    jobs.wait(lambda: jobs.state(f"{a}_0") is JobState.RUNNING)
    time.sleep(0.1)  # a few scheduler ticks: b must stay where it is
    assert jobs.state(f"{b}_0") is JobState.PENDING and not jobs.stamped(
        "b-start"
    )  # free slots, yet it waits
    (jobs.stamps / "release").touch()
    final = jobs.final(a, b)
    assert final[f"{a}_0"].state is JobState.COMPLETED
    assert final[f"{b}_0"].state is JobState.COMPLETED and final[f"{b}_0"].reason == ""
    assert jobs.stamp("b-start") >= jobs.stamp("a-end")


def test_ok_after_a_failure_is_cancelled_with_the_reason_and_never_runs(jobs: Jobs) -> None:
    a = jobs.submit(body("sleep 0.2", "exit 1"))
    b = jobs.submit(body("stamp b-ran"), after=[a])
    final = jobs.final(a, b)
    assert final[f"{a}_0"].state is JobState.FAILED
    assert final[f"{b}_0"].state is JobState.CANCELLED
    assert final[f"{b}_0"].reason == f"dependency never satisfied: {a}_0 ended FAILED"
    assert not jobs.stamped("b-ran")


@pytest.mark.parametrize(
    ("condition", "exit_code", "runs"),
    [
        (Condition.OK, 0, True),
        (Condition.OK, 3, False),
        (Condition.NOTOK, 3, True),
        (Condition.NOTOK, 0, False),
        (Condition.ANY, 0, True),
        (Condition.ANY, 3, True),
    ],
)
def test_each_condition(jobs: Jobs, condition: Condition, exit_code: int, runs: bool) -> None:
    a = jobs.submit(body("sleep 0.2", "stamp a-end", f"exit {exit_code}"))
    b = jobs.submit(body("stamp b-start"), after=[a], condition=condition)
    final = jobs.final(a, b)
    assert final[f"{a}_0"].state is (JobState.COMPLETED if exit_code == 0 else JobState.FAILED)
    if runs:
        assert final[f"{b}_0"].state is JobState.COMPLETED
        assert jobs.stamp("b-start") >= jobs.stamp("a-end")
    else:
        assert final[f"{b}_0"].state is JobState.CANCELLED
        assert final[f"{b}_0"].reason.startswith(f"dependency never satisfied: {a}_0 ended ")
        assert not jobs.stamped("b-start")


def test_notok_and_any_run_after_a_cancelled_dependency_and_ok_does_not(jobs: Jobs) -> None:
    a = jobs.submit("sleep 30")
    ok = jobs.submit(body("stamp ok"), after=[a], condition=Condition.OK)
    notok = jobs.submit(body("stamp notok"), after=[a], condition=Condition.NOTOK)
    any_ = jobs.submit(body("stamp any"), after=[a], condition=Condition.ANY)
    jobs.wait(lambda: jobs.state(f"{a}_0") is JobState.RUNNING)
    jobs.backend.cancel([a])
    final = jobs.final(a, ok, notok, any_)
    assert final[f"{a}_0"].state is JobState.CANCELLED
    assert final[f"{ok}_0"].state is JobState.CANCELLED
    assert final[f"{ok}_0"].reason == f"dependency never satisfied: {a}_0 ended CANCELLED"
    assert final[f"{notok}_0"].state is JobState.COMPLETED and jobs.stamped("notok")
    assert final[f"{any_}_0"].state is JobState.COMPLETED and jobs.stamped("any")
    assert not jobs.stamped("ok")


def test_a_whole_array_is_waited_for_element_by_element(jobs: Jobs) -> None:
    """Element 1 fails: ok on the array is never met; any runs after the last one ended."""
    a = jobs.submit(
        body('sleep "0.$((CORRAL_ARRAY_TASK_ID * 3 + 1))"', 'stamp "a-end-$CORRAL_ARRAY_TASK_ID"',
             'exit $((CORRAL_ARRAY_TASK_ID == 1))'),
        elements=3,
    )  # fmt: skip
    ok = jobs.submit(body("stamp ok"), after=[a])
    any_ = jobs.submit(body("stamp any"), after=[a], condition=Condition.ANY)
    final = jobs.final(a, ok, any_)
    assert [final[f"{a}_{i}"].state for i in range(3)] == [
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.COMPLETED,
    ]
    assert final[f"{ok}_0"].state is JobState.CANCELLED
    assert final[f"{ok}_0"].reason == f"dependency never satisfied: {a}_1 ended FAILED"
    assert final[f"{any_}_0"].state is JobState.COMPLETED
    assert jobs.stamp("any") >= max(jobs.stamp(f"a-end-{i}") for i in range(3))


def test_an_element_dependency_waits_for_that_element_only(jobs: Jobs) -> None:
    a = jobs.submit("[[ $CORRAL_ARRAY_TASK_ID == 0 ]] && exec sleep 30; exit 0", elements=2)
    b = jobs.submit(body("stamp b"), after=[f"{a}_1"])
    jobs.wait(lambda: jobs.states(b)[f"{b}_0"] is JobState.COMPLETED, "b completes")
    assert jobs.states(a) == {f"{a}_0": JobState.RUNNING, f"{a}_1": JobState.COMPLETED}
    jobs.backend.cancel([a])
    assert jobs.final(a)[f"{a}_0"].state is JobState.CANCELLED


def test_every_job_named_must_meet_the_condition(jobs: Jobs) -> None:
    a = jobs.submit("exit 0")
    b = jobs.submit("sleep 0.2; exit 4")
    c = jobs.submit(body("stamp c"), after=[a, b])
    final = jobs.final(a, b, c)
    assert final[f"{c}_0"].state is JobState.CANCELLED
    assert final[f"{c}_0"].reason == f"dependency never satisfied: {b}_0 ended FAILED"
    assert not jobs.stamped("c")


def test_a_cancelled_dependent_cancels_its_own_dependents(jobs: Jobs) -> None:
    a = jobs.submit("exit 1")
    b = jobs.submit(body("stamp b"), after=[a])
    c = jobs.submit(body("stamp c"), after=[b], condition=Condition.OK)
    d = jobs.submit(body("stamp d"), after=[b], condition=Condition.NOTOK)
    final = jobs.final(a, b, c, d)
    assert final[f"{c}_0"].state is JobState.CANCELLED
    assert final[f"{c}_0"].reason == f"dependency never satisfied: {b}_0 ended CANCELLED"
    assert final[f"{d}_0"].state is JobState.COMPLETED
    assert not jobs.stamped("b") and not jobs.stamped("c") and jobs.stamped("d")


@pytest.mark.parametrize("unknown", ["{job}9", "{a}_2", "{a}_x", "1", ""])
def test_a_dependency_on_an_unknown_job_is_refused_at_submission(jobs: Jobs, unknown: str) -> None:
    a = jobs.submit("exit 0", elements=2)
    prefix = f"L{os.getpid()}-"
    assert a == f"{prefix}1"  # this process's first job: its pid keeps it apart from other processes'
    unknown = unknown.format(job=prefix, a=a)
    with pytest.raises(SubmissionError, match=f"the local backend knows no job {unknown} to wait for"):
        jobs.submit("exit 0", after=[f"{a}_0", unknown])
    nxt = jobs.submit("exit 0", after=[f"{a}_1"])
    assert nxt == f"{prefix}2"  # the refused submission took no id and queued nothing
    assert set(jobs.final(a, nxt, f"{prefix}3")) == {f"{a}_0", f"{a}_1", f"{nxt}_0"}


def test_a_held_element_does_not_block_an_unrelated_one_behind_it(tmp_path: Path) -> None:
    backend = LocalBackend(slots=2)
    try:
        jobs = Jobs(backend, tmp_path)
        a = jobs.submit("exec sleep 30")
        b = jobs.submit(body("stamp b"), after=[a])
        c = jobs.submit(body("stamp c"))
        jobs.wait(lambda: jobs.states(c)[f"{c}_0"] is JobState.COMPLETED, "c completes while a runs")
        assert jobs.state(f"{a}_0") is JobState.RUNNING
        assert jobs.state(f"{b}_0") is JobState.PENDING and not jobs.stamped("b")
        backend.cancel([a])
        final = jobs.final(a, b)
        assert final[f"{b}_0"].state is JobState.CANCELLED
    finally:
        backend.close()


def test_a_held_element_takes_no_slot(tmp_path: Path) -> None:
    """One slot: held elements wait for their dependency, the others run in turn."""
    backend = LocalBackend(slots=1)
    try:
        jobs = Jobs(backend, tmp_path)
        a = jobs.submit(body("sleep 0.3", "stamp a"))
        held = jobs.submit(body("stamp held"), after=[a], condition=Condition.NOTOK)
        c = jobs.submit(body("stamp c"))
        final = jobs.final(a, held, c)
        assert final[f"{c}_0"].state is JobState.COMPLETED and jobs.stamp("c") >= jobs.stamp("a")
        assert final[f"{held}_0"].state is JobState.CANCELLED
    finally:
        backend.close()


def test_cancel_of_an_element_id_cancels_only_that_element(tmp_path: Path) -> None:
    backend = LocalBackend(slots=2)
    try:
        jobs = Jobs(backend, tmp_path)
        a = jobs.submit("exec sleep 30", elements=3)  # two run, the third waits for a slot
        jobs.wait(lambda: jobs.states(a) == {f"{a}_0": JobState.RUNNING, f"{a}_1": JobState.RUNNING,
                                             f"{a}_2": JobState.PENDING})  # fmt: skip
        backend.cancel([f"{a}_2"])  # pending
        assert jobs.state(f"{a}_2") is JobState.CANCELLED
        backend.cancel([f"{a}_0"])  # running
        jobs.wait(lambda: jobs.state(f"{a}_0") is JobState.CANCELLED, f"{a}_0 cancelled")
        assert jobs.state(f"{a}_1") is JobState.RUNNING
        time.sleep(0.2)  # the freed slot must not bring back the cancelled pending element
        assert jobs.states(a) == {
            f"{a}_0": JobState.CANCELLED,
            f"{a}_1": JobState.RUNNING,
            f"{a}_2": JobState.CANCELLED,
        }
        backend.cancel([a])
        assert jobs.final(a)[f"{a}_1"].state is JobState.CANCELLED
    finally:
        backend.close()


def test_cancelling_a_held_element_leaves_the_rest(jobs: Jobs) -> None:
    a = jobs.submit("exec sleep 30")
    b = jobs.submit(body('stamp "b$CORRAL_ARRAY_TASK_ID"'), elements=2, after=[a], condition=Condition.ANY)
    jobs.backend.cancel([f"{b}_0"])
    assert jobs.states(b) == {f"{b}_0": JobState.CANCELLED, f"{b}_1": JobState.PENDING}
    jobs.backend.cancel([a])
    final = jobs.final(a, b)
    assert final[f"{b}_1"].state is JobState.COMPLETED and jobs.stamped("b1")
    assert final[f"{b}_0"].state is JobState.CANCELLED and final[f"{b}_0"].reason == ""
    assert not jobs.stamped("b0")


def test_close_cancels_what_is_held(tmp_path: Path) -> None:
    backend = LocalBackend(slots=2)
    jobs = Jobs(backend, tmp_path)
    a = jobs.submit("exec sleep 30")
    b = jobs.submit(body("stamp b"), after=[a], condition=Condition.ANY)
    jobs.wait(lambda: jobs.state(f"{a}_0") is JobState.RUNNING)
    backend.close()
    final = jobs.final(a, b)
    assert final[f"{a}_0"].state is JobState.CANCELLED and final[f"{b}_0"].state is JobState.CANCELLED
    assert not jobs.stamped("b")


@pytest.mark.parametrize(("failing", "runs"), [("1", False), ("0 1 2", True)])
def test_notok_on_a_whole_array_asks_each_element_to_fail(jobs: Jobs, failing: str, runs: bool) -> None:
    a = jobs.submit(
        f"for i in {failing}; do [[ $i == $CORRAL_ARRAY_TASK_ID ]] && exit 1; done; exit 0", elements=3
    )
    b = jobs.submit(body("stamp b"), after=[a], condition=Condition.NOTOK)
    final = jobs.final(a, b)
    assert final[f"{b}_0"].state is (JobState.COMPLETED if runs else JobState.CANCELLED)
    assert jobs.stamped("b") is runs
    if not runs:
        assert final[f"{b}_0"].reason.endswith("ended COMPLETED")
