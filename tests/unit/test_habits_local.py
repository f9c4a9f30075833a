"""slurminade's habits on the local backend, which keeps them as SLURM does: ``after`` with
``condition="started"``, a ``join()`` barrier (afterany on top of a job's own condition),
``singleton`` jobs that never overlap, and raw job ids, which the local backend cannot know.
Elements here are plain bash scripts leaving time stamps; the ``@task`` tests run tasks."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

import corral
from corral.backends.base import ArraySpec
from corral.backends.local import LocalBackend
from corral.frontends import barrier
from corral.job import Condition, Dependency, ElementStatus, JobState
from corral.resources import Resources

TIMEOUT = 30.0
STAMP = 'stamp() { date +%s%N > "$STAMPS/$1"; }'


class Jobs:
    """Arrays of bash bodies on one LocalBackend; each element may leave time stamps
    (nanoseconds since the epoch) in ``$STAMPS``."""

    def __init__(self, backend: LocalBackend, root: Path) -> None:
        self.backend, self.root = backend, root
        self.stamps = root / "stamps"
        self.stamps.mkdir()
        (root / "logs").mkdir()
        self._count = 0

    def submit(
        self,
        *lines: str,
        elements: int = 1,
        after: Sequence[str] = (),
        condition: Condition = Condition.OK,
        ended: Sequence[str] = (),
        name: str | None = None,
        singleton: bool = False,
    ) -> str:
        self._count += 1
        script = self.root / f"job{self._count}.sh"
        script.write_text("\n".join(["#!/bin/bash", f"STAMPS={self.stamps}", STAMP, *lines, ""]))
        spec = ArraySpec(
            batch_dir=str(self.root), sub=self._count, elements=elements,
            resources=Resources(singleton=singleton or None, job_name=name),
            job_name=f"corral-job{self._count}",
            python=sys.executable, chdir=str(self.root),
            dependency=Dependency(condition, tuple(after), tuple(ended)) if after or ended else None,
        )  # fmt: skip
        logs = (str(self.root / "logs" / "{job}_{index}.out"), str(self.root / "logs" / "{job}_{index}.err"))
        return self.backend.submit(spec, str(script), logs)

    def statuses(self, *job_ids: str) -> dict[str, ElementStatus]:
        return self.backend.poll(list(job_ids))

    def wait(self, what: Callable[[], bool], message: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not what():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting: {message}")
            time.sleep(0.02)

    def final(self, *job_ids: str) -> dict[str, JobState]:
        self.wait(lambda: all(s.state.is_final for s in self.statuses(*job_ids).values()), f"{job_ids} final")
        return {eid: s.state for eid, s in self.statuses(*job_ids).items()}

    def state(self, element: str) -> JobState:
        return self.statuses(element.rsplit("_", 1)[0])[element].state

    def stamp(self, name: str) -> int:
        return int((self.stamps / name).read_text())

    def stamped(self, name: str) -> bool:
        return (self.stamps / name).exists()


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[Jobs]:
    backend = LocalBackend(slots=4)
    yield Jobs(backend, tmp_path)
    backend.close()


HOLD = 'until [[ -e "$STAMPS/release" ]]; do sleep 0.02; done'  # runs until the test releases it


# -- after(..., condition="started") ----------------------------------------------------------


def test_started_runs_while_its_dependency_still_runs(jobs: Jobs) -> None:
    a = jobs.submit("stamp a-start", HOLD, "stamp a-end")
    b = jobs.submit("stamp b-start", after=[a], condition=Condition.STARTED)
    jobs.wait(lambda: jobs.stamped("b-start"), "b to start while a runs")
    assert jobs.state(f"{a}_0") is JobState.RUNNING and not jobs.stamped("a-end")
    (jobs.stamps / "release").touch()
    assert jobs.final(a, b) == {f"{a}_0": JobState.COMPLETED, f"{b}_0": JobState.COMPLETED}


def test_started_waits_while_its_dependency_is_pending(jobs: Jobs) -> None:
    """a waits behind h (ok); b, started after a, waits behind a in turn."""
    h = jobs.submit(HOLD)
    a = jobs.submit("stamp a-start", after=[h])
    b = jobs.submit("stamp b-start", after=[a], condition=Condition.STARTED)
    jobs.wait(lambda: jobs.state(f"{h}_0") is JobState.RUNNING, "h to run")
    time.sleep(0.2)  # ten scheduler ticks, with free slots
    assert jobs.state(f"{b}_0") is JobState.PENDING and not jobs.stamped("b-start")
    (jobs.stamps / "release").touch()
    assert set(jobs.final(h, a, b).values()) == {JobState.COMPLETED}


def test_started_is_met_by_a_dependency_cancelled_before_it_started(jobs: Jobs) -> None:
    h = jobs.submit(HOLD)
    a = jobs.submit("stamp a-start", after=[h])
    b = jobs.submit("stamp b-start", after=[a], condition=Condition.STARTED)
    jobs.backend.cancel([a])  # pending: it never starts, and SLURM's after: counts that as met
    assert jobs.final(a, b) == {f"{a}_0": JobState.CANCELLED, f"{b}_0": JobState.COMPLETED}
    assert not jobs.stamped("a-start") and jobs.stamped("b-start")
    (jobs.stamps / "release").touch()


# -- a join's barrier: afterany on top of the job's own condition ------------------------------


def test_a_barrier_holds_a_job_until_those_jobs_ended_however(jobs: Jobs) -> None:
    ok = jobs.submit("sleep 0.2", "stamp ok-end")
    failing = jobs.submit("sleep 0.5", "stamp failing-end", "exit 3")
    after = jobs.submit("stamp after-start", after=[ok], ended=[failing])
    assert jobs.final(ok, failing, after) == {
        f"{ok}_0": JobState.COMPLETED, f"{failing}_0": JobState.FAILED, f"{after}_0": JobState.COMPLETED,
    }  # fmt: skip
    assert jobs.stamp("after-start") >= max(jobs.stamp("ok-end"), jobs.stamp("failing-end"))


def test_a_barrier_does_not_soften_the_jobs_own_condition(jobs: Jobs) -> None:
    failing = jobs.submit("exit 3")
    other = jobs.submit("sleep 0.2")
    after = jobs.submit("stamp ran", after=[failing], ended=[other])  # ok on the failed one
    assert jobs.final(failing, other, after)[f"{after}_0"] is JobState.CANCELLED
    assert not jobs.stamped("ran")


# -- singleton -----------------------------------------------------------------------------------


def intervals(jobs: Jobs, names: list[str]) -> list[tuple[int, int]]:
    return sorted((jobs.stamp(f"{n}-start"), jobs.stamp(f"{n}-end")) for n in names)


def test_singleton_jobs_of_one_name_never_overlap(jobs: Jobs) -> None:
    """Four slots, four singleton jobs of one name, one of them an array of three: one job at a
    time, while the elements of the array run together, as SLURM does
    (tests/data/slurm/sacct_singleton_after.txt)."""
    run = ['stamp "$1-start"', "sleep 0.3", 'stamp "$1-end"']
    first = jobs.submit('set -- "s$CORRAL_ARRAY_TASK_ID"', *run, elements=3, name="one", singleton=True)
    rest = [jobs.submit(f"set -- t{i}", *run, name="one", singleton=True) for i in range(3)]
    other = jobs.submit("set -- other", *run, name="two", singleton=True)  # another name: no wait
    assert set(jobs.final(first, *rest, other).values()) == {JobState.COMPLETED}
    array = intervals(jobs, ["s0", "s1", "s2"])
    assert max(start for start, _ in array) < min(end for _, end in array)  # together
    spans = sorted([(array[0][0], max(end for _, end in array)), *intervals(jobs, ["t0", "t1", "t2"])])
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:], strict=False)), spans
    assert jobs.stamp("other-start") < spans[-1][0]  # it ran beside them


def test_a_job_without_singleton_is_not_held_by_one_of_its_name(jobs: Jobs) -> None:
    single = jobs.submit("stamp single-start", HOLD, name="same", singleton=True)
    jobs.wait(lambda: jobs.stamped("single-start"), "the singleton to start")
    plain = jobs.submit("stamp plain", name="same")
    jobs.wait(lambda: jobs.stamped("plain"), "the plain job to run beside it")
    (jobs.stamps / "release").touch()
    assert set(jobs.final(single, plain).values()) == {JobState.COMPLETED}


# -- join() with tasks ---------------------------------------------------------------------------


@corral.task(backend="local", time="0:05:00")
def span(seconds: float) -> tuple[float, float]:
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


@corral.task(backend="local", time="0:05:00")
def fail() -> None:
    raise RuntimeError("on purpose")


@pytest.fixture
def fresh_barrier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("CORRAL_DIR", str(tmp_path / "work"))  # a new engine, made with:
    monkeypatch.setenv("CORRAL_LOCAL_SLOTS", "4")  # room for every job at once, but for the barrier
    barrier.reset()
    yield
    barrier.reset()


def test_join_runs_later_calls_after_every_earlier_job_ended(fresh_barrier: None) -> None:
    before = [span.distribute(1.5), span.distribute(0.3)]
    failed = fail.distribute()  # afterany: a failure before the join holds nothing up for ever
    corral.join()
    after = [span.distribute(0.0), span.options(cpus=1).distribute(0.0)]
    with pytest.raises(RuntimeError, match="on purpose"):
        failed.result(timeout=60)
    ends = [ref.result(timeout=60)[1] for ref in before]
    starts = [ref.result(timeout=60)[0] for ref in after]
    assert min(starts) >= max(ends)


def test_join_flushes_the_open_batch_and_wait_blocks_until_the_jobs_ended(fresh_barrier: None) -> None:
    with corral.Batch(max_size=2) as batch:
        refs = [span.distribute(0.2) for _ in range(3)]
        assert all(ref.job_id is None for ref in refs)
        corral.join(wait=True)
        assert all(ref.job_id is not None and ref.done() for ref in refs)
        late = span.distribute(0.0)
    assert batch.refs == [*refs, late]
    assert late.result(timeout=60)[0] >= max(ref.result()[1] for ref in refs)


def test_a_join_with_nothing_before_it_changes_nothing(fresh_barrier: None) -> None:
    corral.join()
    assert span.distribute(0.0).result(timeout=60)[1] >= 0
    assert barrier.current() == ()


# -- raw job ids ---------------------------------------------------------------------------------


def test_raw_job_ids_are_checked_when_after_is_called() -> None:
    assert span.after("4242", 4243, ["4244_3"])._after == ("4242", "4243", "4244_3")
    for bad in ("abc", "4242.3", "42 42", "0", "-1", "4242_", "4242_[0-3]", -4):
        with pytest.raises(ValueError, match="job id"):
            span.after(bad)
    with pytest.raises(TypeError, match="job ids"):
        span.after(True)


def test_the_local_backend_refuses_a_raw_job_id_before_submitting(fresh_barrier: None) -> None:
    with pytest.raises(corral.SubmissionError, match="local backend runs only its own jobs"):
        span.after("4242").distribute(0.0)
    with corral.Batch() as batch:  # at its own distribute line, not at the flush
        with pytest.raises(corral.SubmissionError, match="cannot wait for a job by its id"):
            corral.sbatch("true", after=4242, backend="local")
    assert batch.refs == []
