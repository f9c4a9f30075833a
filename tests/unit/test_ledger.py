"""The ledger's decisions as tables (engine/ledger.py): each row plays events into a fresh
ledger and lists the decisions it must make and the states the calls must end in. Then the
same rows with every element event delivered twice, and a property test of random
interleavings: no call is ever settled twice, and every call is settled once every element
has ended and its grace period has passed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.backends.base import ArraySpec, Limits
from corral.engine.elements import SubState
from corral.engine.ledger import Cancelled, Counts, Decision, Ledger, Orphan, Resolve, Retry, Withdraw
from corral.engine.planning import Plan, plan_batch, plan_tasks
from corral.errors import job_error
from corral.job import Attempt, ElementStatus, JobState
from corral.resources import Resources
from corral.retry import RetryPolicy

GRACE = 5.0
LOST_AFTER = 1000.0
R = Resources(time=timedelta(minutes=2), memory=1000)
LIMITS = Limits(max_array_size=1001, max_submit_jobs=None, slots=64)
S = JobState
OOM = JobState.OUT_OF_MEMORY


def substate(plan: Plan, resources: Resources = R) -> SubState:
    spec = ArraySpec(
        batch_dir="/b", sub=plan.sub, elements=plan.elements, resources=resources, job_name="f",
        python="python", chdir="/",
    )  # fmt: skip
    return SubState(plan, spec, "")


def show(decision: Decision | Orphan) -> str:
    """A decision in a few words, for tables that read like a log."""
    if isinstance(decision, Resolve):
        if decision.ok:
            return f"done {decision.call}"
        tries = f" x{len(decision.attempts)}" if len(decision.attempts) > 1 else ""
        return f"fail {decision.call} {type(decision.error).__name__}{tries}"
    if isinstance(decision, Retry):
        grown = [f"time={decision.resources.time}"] if decision.resources.time != R.time else []
        grown += [f"mem={decision.resources.memory}"] if decision.resources.memory != R.memory else []
        return " ".join([f"retry {decision.call} @{decision.attempt}", *grown])
    if isinstance(decision, Withdraw):
        return f"withdraw {decision.call} @{decision.attempt}"
    if isinstance(decision, Cancelled):
        return f"cancelled {decision.call}"
    started = "started" if decision.started else "never started"
    where = f"@{decision.attempt} {decision.element} {decision.status.state.name}"
    return f"orphan {decision.call} {where} {started}"


class Player:
    """Plays table events into a ledger the way the engine will: submissions numbered in
    order, scheduler reports, and each orphan failed with the JobError its status gives."""

    def __init__(self, n_calls: int, policy: RetryPolicy) -> None:
        self.ledger = Ledger(n_calls, policy)
        self.n_calls = n_calls
        self.log: list[str] = []
        self.statuses: dict[str, ElementStatus] = {}

    def submit(self, plans: list[Plan], job: str, resources: Resources = R) -> None:
        for plan in plans:
            decisions = self.ledger.add_submission(substate(plan, resources))
            self.ledger.submitted(len(self.ledger.subs) - 1, job, now=0.0)
            self.log += map(show, decisions)

    def play(self, event: tuple[Any, ...]) -> None:
        kind, *args = event
        ledger = self.ledger
        if kind == "pull":  # ("pull", elements, job): every call, pulled by that many elements
            limits = Limits(max_array_size=1001, max_submit_jobs=None, slots=args[0])
            self.submit(plan_batch(self.n_calls, limits), args[1])
        elif kind == "static":  # ("static", chunksize, job)
            self.submit(plan_batch(self.n_calls, LIMITS, chunksize=args[0]), args[1])
        elif kind == "resubmit":  # ("resubmit", job): the retries, as the engine resubmits them
            retries = ledger.retries()
            if retries:
                tasks = [(call, attempt) for call, attempt, _ in retries]
                self.submit([plan_tasks(len(ledger.subs), tasks, LIMITS)], args[0], retries[0][2])
        elif kind == "take":  # ("take", call, attempt, element)
            ledger.taken(*args)
        elif kind == "ok":  # ("ok", call, attempt, element)
            self.log += map(show, ledger.finished(args[0], args[1], True, element=args[2], host="n1"))
        elif kind == "raise":  # ("raise", call, attempt, exception, element)
            call, attempt, error, element = args
            self.log += map(show, ledger.finished(call, attempt, False, error, element, "n1"))
        elif kind == "skip":
            self.log += map(show, ledger.skipped(*args))
        elif kind == "cancel":
            if ledger.cancel(args[0]):
                self.log.append(f"cancelled {args[0]}")
        elif kind == "report":  # ("report", now, {element: state}): one bulk status report
            for element, state in args[1].items():
                self.statuses[element] = ElementStatus(element, state, "n1")
            ledger.element_status(dict(self.statuses), args[0], LOST_AFTER)
        elif kind == "tick":  # ("tick", now): orphans, failed with their JobError
            for orphan in ledger.orphans(args[0], GRACE):
                self.log.append(show(orphan))
                self.log += map(show, self.fail(orphan))
        else:
            raise AssertionError(f"unknown event {event}")

    def fail(self, orphan: Orphan) -> list[Decision]:
        status = orphan.status
        error = job_error(status.state, job_id=orphan.element, call=orphan.call, batch="b", node=status.node)
        return self.ledger.failed(orphan.call, orphan.attempt, error, orphan.element, status, orphan.started)

    def states(self) -> str:
        return " ".join(self.ledger.state(call).name for call in range(self.n_calls))


NO_RETRY = RetryPolicy(max_retries=0)
DEFAULT = RetryPolicy()
ON_VALUE = RetryPolicy(retry_on=(ValueError,))
MORE_TIME = RetryPolicy(time_factor=2)
MORE_MEMORY = RetryPolicy(memory_factor=1.5)
TWO_RETRIES = RetryPolicy(max_retries=2)

#: (name, calls, policy, events, decisions expected, states expected)
ROWS: list[tuple[str, int, RetryPolicy, list[tuple[Any, ...]], list[str], str]] = [
    ("success", 1, DEFAULT,
     [("pull", 1, "100"), ("take", 0, 0, "100_0"), ("ok", 0, 0, "100_0")],
     ["done 0"], "COMPLETED"),
    ("an exception is not retried", 1, DEFAULT,
     [("pull", 1, "100"), ("take", 0, 0, "100_0"), ("raise", 0, 0, ValueError("x"), "100_0")],
     ["fail 0 ValueError"], "FAILED"),
    ("an exception in retry_on is retried, then succeeds", 1, ON_VALUE,
     [("pull", 1, "100"), ("take", 0, 0, "100_0"), ("raise", 0, 0, ValueError("x"), "100_0"),
      ("resubmit", "101"), ("take", 0, 1, "101_0"), ("ok", 0, 1, "101_0")],
     ["retry 0 @1", "done 0"], "COMPLETED"),
    ("a result read before its claim", 1, DEFAULT,
     [("pull", 1, "100"), ("ok", 0, 0, "100_0"), ("take", 0, 0, "100_0")],
     ["done 0"], "COMPLETED"),
    ("a late success after the next attempt started", 1, DEFAULT,
     [("pull", 1, "100"), ("take", 0, 0, "100_0"), ("report", 10.0, {"100_0": S.NODE_FAIL}), ("tick", 16.0),
      ("resubmit", "101"), ("take", 0, 1, "101_0"), ("ok", 0, 0, "100_0"), ("ok", 0, 1, "101_0")],
     ["orphan 0 @0 100_0 NODE_FAIL started", "retry 0 @1", "done 0"], "COMPLETED"),
    ("a late success while the next attempt waits: withdrawn", 1, DEFAULT,
     [("pull", 1, "100"), ("take", 0, 0, "100_0"), ("report", 10.0, {"100_0": S.NODE_FAIL}), ("tick", 16.0),
      ("resubmit", "101"), ("ok", 0, 0, "100_0"), ("take", 0, 1, "101_0")],
     ["orphan 0 @0 100_0 NODE_FAIL started", "retry 0 @1", "withdraw 0 @1", "done 0"], "COMPLETED"),
    ("a late failure of an attempt given up on is ignored", 1, ON_VALUE,
     [("pull", 1, "100"), ("take", 0, 0, "100_0"), ("report", 10.0, {"100_0": S.NODE_FAIL}), ("tick", 16.0),
      ("raise", 0, 0, ValueError("late"), "100_0"), ("resubmit", "101"), ("take", 0, 1, "101_0")],
     ["orphan 0 @0 100_0 NODE_FAIL started", "retry 0 @1"], "RUNNING"),
    ("an element ended before its result, within grace: no decision", 1, DEFAULT,
     [("pull", 1, "100"), ("take", 0, 0, "100_0"), ("report", 10.0, {"100_0": S.COMPLETED}), ("tick", 14.9),
      ("ok", 0, 0, "100_0"), ("tick", 30.0)],
     ["done 0"], "COMPLETED"),
    ("grace over, TIMEOUT with time_factor: more time", 1, MORE_TIME,
     [("pull", 1, "100"), ("take", 0, 0, "100_0"), ("report", 10.0, {"100_0": S.TIMEOUT}), ("tick", 15.0)],
     ["orphan 0 @0 100_0 TIMEOUT started", "retry 0 @1 time=0:04:00"], "PENDING"),
    ("grace over, TIMEOUT without time_factor: fails", 1, DEFAULT,
     [("pull", 1, "100"), ("take", 0, 0, "100_0"), ("report", 10.0, {"100_0": S.TIMEOUT}), ("tick", 15.0)],
     ["orphan 0 @0 100_0 TIMEOUT started", "fail 0 JobTimeoutError"], "TIMEOUT"),
    ("grace over, node failure: run again", 1, DEFAULT,
     [("pull", 1, "100"), ("take", 0, 0, "100_0"), ("report", 10.0, {"100_0": S.NODE_FAIL}), ("tick", 15.0),
      ("resubmit", "101"), ("take", 0, 1, "101_0"), ("ok", 0, 1, "101_0")],
     ["orphan 0 @0 100_0 NODE_FAIL started", "retry 0 @1", "done 0"], "COMPLETED"),
    ("grace over, node failure, no retries: fails", 1, NO_RETRY,
     [("pull", 1, "100"), ("take", 0, 0, "100_0"), ("report", 10.0, {"100_0": S.NODE_FAIL}), ("tick", 15.0)],
     ["orphan 0 @0 100_0 NODE_FAIL started", "fail 0 NodeFailureError"], "NODE_FAIL"),
    ("grace over, out of memory with memory_factor: more memory", 1, MORE_MEMORY,
     [("pull", 1, "100"), ("take", 0, 0, "100_0"), ("report", 10.0, {"100_0": OOM}), ("tick", 15.0)],
     ["orphan 0 @0 100_0 OUT_OF_MEMORY started", "retry 0 @1 mem=1500"], "PENDING"),
    ("grace over, out of memory: fails", 1, DEFAULT,
     [("pull", 1, "100"), ("take", 0, 0, "100_0"), ("report", 10.0, {"100_0": OOM}), ("tick", 15.0)],
     ["orphan 0 @0 100_0 OUT_OF_MEMORY started", "fail 0 JobOutOfMemoryError"], "OUT_OF_MEMORY"),
    ("a call never taken once its pull array ended: the failing element is blamed", 3, DEFAULT,
     [("pull", 2, "100"), ("take", 0, 0, "100_1"), ("ok", 0, 0, "100_1"), ("take", 1, 0, "100_1"),
      ("ok", 1, 0, "100_1"), ("report", 10.0, {"100_0": S.FAILED}), ("report", 11.0, {"100_1": S.COMPLETED}),
      ("tick", 15.5), ("tick", 16.0)],
     ["done 0", "done 1", "orphan 2 @0 100_0 FAILED never started", "fail 2 JobFailedError"],
     "COMPLETED COMPLETED FAILED"),
    ("a call never taken once its pull array completed: run again", 2, DEFAULT,
     [("pull", 2, "100"), ("take", 0, 0, "100_0"), ("ok", 0, 0, "100_0"),
      ("report", 10.0, {"100_0": S.COMPLETED, "100_1": S.COMPLETED}), ("tick", 15.0)],
     ["done 0", "orphan 1 @0 100_0 COMPLETED never started", "retry 1 @1"], "COMPLETED PENDING"),
    ("a static element fails its own calls only, taken or not", 4, NO_RETRY,
     [("static", 2, "100"), ("take", 2, 0, "100_1"),
      ("report", 10.0, {"100_0": S.RUNNING, "100_1": S.NODE_FAIL}), ("tick", 15.0)],
     ["orphan 2 @0 100_1 NODE_FAIL started", "fail 2 NodeFailureError",
      "orphan 3 @0 100_1 NODE_FAIL never started", "fail 3 NodeFailureError"],
     "PENDING PENDING NODE_FAIL NODE_FAIL"),
    ("cancel before an element takes the call", 2, DEFAULT,
     [("pull", 1, "100"), ("cancel", 0), ("take", 0, 0, "100_0"), ("take", 1, 0, "100_0")],
     ["cancelled 0"], "CANCELLED RUNNING"),
    ("cancel after an element took the call: too late", 1, DEFAULT,
     [("pull", 1, "100"), ("take", 0, 0, "100_0"), ("cancel", 0), ("ok", 0, 0, "100_0")],
     ["done 0"], "COMPLETED"),
    ("an element skips a call the client took", 2, DEFAULT,
     [("pull", 1, "100"), ("skip", 0, 0), ("take", 1, 0, "100_0")],
     ["cancelled 0"], "CANCELLED RUNNING"),
    ("a requeued element is not final: nothing happens", 1, DEFAULT,
     [("pull", 1, "100"), ("take", 0, 0, "100_0"), ("report", 10.0, {"100_0": S.REQUEUED}), ("tick", 100.0),
      ("report", 110.0, {"100_0": S.RUNNING}), ("tick", 200.0)],
     [], "RUNNING"),
    ("three failed attempts, in order", 1, TWO_RETRIES,
     [("pull", 1, "100"), ("take", 0, 0, "100_0"), ("report", 10.0, {"100_0": S.NODE_FAIL}), ("tick", 15.0),
      ("resubmit", "101"), ("take", 0, 1, "101_0"), ("report", 20.0, {"101_0": S.PREEMPTED}), ("tick", 25.0),
      ("resubmit", "102"), ("take", 0, 2, "102_0"), ("report", 30.0, {"102_0": S.NODE_FAIL}), ("tick", 35.0)],
     ["orphan 0 @0 100_0 NODE_FAIL started", "retry 0 @1",
      "orphan 0 @1 101_0 PREEMPTED started", "retry 0 @2",
      "orphan 0 @2 102_0 NODE_FAIL started", "fail 0 NodeFailureError x3"],
     "NODE_FAIL"),
]  # fmt: skip

TABLE = pytest.mark.parametrize(
    ("calls", "policy", "events", "decisions", "states"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
#: Events a requeued element or a replay may deliver again (submissions are the engine's own).
ELEMENT_EVENTS = {"take", "ok", "raise", "skip", "report", "tick", "cancel"}


@TABLE
def test_decisions(
    calls: int, policy: RetryPolicy, events: list[tuple[Any, ...]], decisions: list[str], states: str
) -> None:
    player = Player(calls, policy)
    for event in events:
        player.play(event)
    assert player.log == decisions
    assert player.states() == states


@TABLE
def test_every_event_twice_decides_the_same(
    calls: int, policy: RetryPolicy, events: list[tuple[Any, ...]], decisions: list[str], states: str
) -> None:
    player = Player(calls, policy)
    for event in events:
        player.play(event)
        if event[0] in ELEMENT_EVENTS:
            player.play(event)
    assert player.log == decisions
    assert player.states() == states


def test_three_attempts_are_recorded_in_order() -> None:
    player = Player(1, TWO_RETRIES)
    for event in ROWS[-1][3]:
        player.play(event)
    history = player.ledger.history(0)
    assert [(a.attempt, a.job_id, a.state) for a in history] == [
        (0, "100_0", "NODE_FAIL"), (1, "101_0", "PREEMPTED"), (2, "102_0", "NODE_FAIL"),
    ]  # fmt: skip
    assert player.ledger.counts().retried == 2


def test_an_exception_records_its_type_and_host_and_asks_the_policy() -> None:
    player = Player(1, ON_VALUE)
    player.play(("pull", 1, "100"))
    decisions = player.ledger.finished(0, 0, False, ValueError("bad value"), "100_0", "n7")
    assert isinstance(decisions[0], Retry)
    assert decisions[0].record == player.ledger.history(0)[0]
    assert str(decisions[0].record) == "attempt 1: job 100_0 raised ValueError on n7: bad value"
    assert player.ledger.retries() == [(0, 1, R)]
    assert player.ledger.retries() == []  # handed out once


def test_an_exception_from_no_known_element_is_not_retried() -> None:
    player = Player(1, ON_VALUE)
    player.play(("pull", 1, "100"))
    (decision,) = player.ledger.finished(0, 0, False, ValueError("x"), "", "")
    assert isinstance(decision, Resolve) and not decision.ok


def test_static_elements_name_their_calls_before_they_start() -> None:
    player = Player(4, DEFAULT)
    player.play(("static", 2, "100"))
    ledger = player.ledger
    assert [ledger.job_id_of(c) for c in range(4)] == ["100_0", "100_0", "100_1", "100_1"]
    found = ledger.static_element(3)
    assert found is not None and found[1] == 1
    player.play(("take", 3, 0, "100_1"))
    assert ledger.holder(3) == "100_1" and ledger.state(3) is JobState.RUNNING


def test_a_pull_array_names_its_job_until_an_element_takes_the_call() -> None:
    player = Player(3, DEFAULT)
    player.play(("pull", 2, "100"))
    assert player.ledger.job_id_of(0) == "100"
    player.play(("take", 0, 0, "100_1"))
    assert player.ledger.job_id_of(0) == "100_1"
    lone = Player(1, DEFAULT)
    lone.play(("pull", 1, "200"))
    assert lone.ledger.job_id_of(0) == "200_0"  # a lone element is the call's own


def test_holders_are_elements_with_a_call_not_ended() -> None:
    player = Player(2, DEFAULT)
    player.play(("pull", 2, "100"))
    player.play(("take", 0, 0, "100_0"))
    player.play(("take", 1, 0, "100_1"))
    player.play(("report", 10.0, {"100_0": S.REQUEUED, "100_1": S.RUNNING}))
    assert player.ledger.holders() == {"100_0", "100_1"}
    player.play(("ok", 1, 0, "100_1"))
    assert player.ledger.holders() == {"100_0"}
    assert player.ledger.counts() == Counts(0, 1, 1, 0, 0, 0)


def test_nothing_is_due_until_an_elements_grace_runs_out() -> None:
    player = Player(1000, DEFAULT)
    player.play(("pull", 4, "100"))
    ledger = player.ledger
    assert not ledger.orphans_due(1e9, GRACE)
    player.play(("report", 10.0, {"100_0": S.COMPLETED}))
    assert not ledger.orphans_due(14.0, GRACE)
    assert ledger.orphans_due(15.0, GRACE)
    assert ledger.orphans(15.0, GRACE) == []  # the other elements still run: nothing to blame
    assert not ledger.orphans_due(15.0, GRACE)  # that element was looked at once


def test_an_orphan_stays_one_until_it_is_failed() -> None:
    player = Player(1, DEFAULT)
    player.play(("pull", 1, "100"))
    player.play(("take", 0, 0, "100_0"))
    player.play(("report", 10.0, {"100_0": S.NODE_FAIL}))
    first = player.ledger.orphans(15.0, GRACE)
    assert player.ledger.orphans(16.0, GRACE) == first  # the engine could not build its error
    assert [show(d) for d in player.fail(first[0])] == ["retry 0 @1"]
    assert player.fail(first[0]) == []  # the same report again settles nothing
    assert player.ledger.orphans(17.0, GRACE) == []


def test_a_claim_read_after_its_element_ended_is_still_orphaned() -> None:
    player = Player(2, NO_RETRY)
    player.play(("pull", 2, "100"))
    player.play(("report", 10.0, {"100_0": S.NODE_FAIL, "100_1": S.RUNNING}))
    player.play(("tick", 15.0))
    player.play(("take", 0, 0, "100_0"))  # the claim shows up late on a slow filesystem
    player.play(("tick", 15.5))
    assert player.log == ["orphan 0 @0 100_0 NODE_FAIL started", "fail 0 NodeFailureError"]


def test_a_replay_may_read_a_later_attempt_first() -> None:
    player = Player(1, DEFAULT)
    player.play(("pull", 1, "100"))
    player.play(("take", 0, 1, "101_0"))  # attempt 1's claim and result, read before 0 ended
    player.play(("ok", 0, 1, "101_0"))
    assert player.ledger.state(0) is JobState.PENDING and player.log == []
    player.play(("take", 0, 0, "100_0"))
    player.play(("report", 10.0, {"100_0": S.NODE_FAIL}))
    player.play(("tick", 15.0))
    assert player.log == ["orphan 0 @0 100_0 NODE_FAIL started", "retry 0 @1", "done 0"]
    assert player.ledger.holder(0) == "101_0"


def test_a_replayed_resubmission_moves_its_calls_on() -> None:
    player = Player(3, DEFAULT)
    player.play(("pull", 1, "100"))
    player.submit([plan_tasks(1, [(2, 1)], LIMITS)], "101")
    ledger = player.ledger
    assert [ledger.attempt(c) for c in range(3)] == [0, 0, 1]
    ledger.past_attempt(2, Attempt(0, "100_0", "NODE_FAIL", "n1"))
    ledger.past_attempt(2, Attempt(0, "100_0", "NODE_FAIL", "n1"))
    assert [a.attempt for a in ledger.history(2)] == [0]
    player.play(("raise", 2, 0, ValueError("late"), "100_0"))  # given up on already
    player.play(("take", 2, 1, "101_0"))
    assert player.states() == "PENDING PENDING RUNNING" and player.log == []


def test_the_client_fails_or_abandons_calls_with_its_own_error() -> None:
    player = Player(3, DEFAULT)
    player.play(("pull", 1, "100"))
    player.play(("take", 2, 0, "100_0"))
    ledger = player.ledger
    refused = job_error(JobState.CANCELLED, job_id=None, call=0, batch="b", reason="never submitted")
    assert ledger.cancel(0, refused) and ledger.state(0) is JobState.CANCELLED
    assert ledger.cancel_all() == [1]
    assert ledger.cancel_all() == []
    resolve = ledger.abandon(2, RuntimeError("cancelled by the executor"))
    assert resolve is not None and not resolve.ok
    assert ledger.abandon(2, RuntimeError("again")) is None
    assert player.states() == "CANCELLED CANCELLED FAILED" and ledger.done
    assert ledger.holders() == set()


def test_live_jobs_are_those_with_elements_not_final() -> None:
    player = Player(2, DEFAULT)
    player.play(("static", 1, "100"))
    assert player.ledger.live_job_ids() == ["100"]
    player.play(("report", 10.0, {"100_0": S.COMPLETED, "100_1": S.COMPLETED}))
    assert player.ledger.live_job_ids() == []


ACTIONS = ["claim", "finish", "end", "read", "again", "tick", "cancel", "resubmit"]
ENDS = [S.COMPLETED, S.FAILED, S.NODE_FAIL, S.TIMEOUT, S.REQUEUED]  # REQUEUED: it runs again


class World:
    """A random but valid run of one batch: elements claim calls exclusively (as the work
    dir makes them), write results, end; the engine reads their records late, out of
    order and twice, and answers the ledger's decisions as it will."""

    def __init__(
        self, data: st.DataObject, n_calls: int, elements: int, policy: RetryPolicy, bulk: bool = False
    ) -> None:
        self.data = data
        self.bulk = bulk  # takes and results through taken_all and finished_all, as runs of one
        self.player = Player(n_calls, policy)
        self.claims: set[tuple[int, int]] = set()  # (call, attempt) taken, exclusively
        self.tasks: dict[str, list[tuple[int, int]]] = {}  # element -> tasks it may take
        self.holding: dict[str, list[tuple[int, int]]] = {}  # element -> tasks it runs
        self.alive: list[str] = []
        self.ended: dict[str, JobState] = {}
        self.unread: list[tuple[Any, ...]] = []
        self.slow: list[tuple[Any, ...]] = []  # written, but seen late (a slow shared filesystem)
        self.client: set[tuple[int, int]] = set()  # claims the client made (cancels, withdrawals)
        self.read: list[tuple[Any, ...]] = []
        self.settled: list[int] = []  # every call settled, each time it is
        self.now = 0.0
        self.jobs = 100
        self.add(self.player.ledger.add_submission(substate(plan_batch(n_calls, self.limits(elements))[0])))

    @staticmethod
    def limits(slots: int) -> Limits:
        return Limits(max_array_size=1001, max_submit_jobs=None, slots=slots)

    def add(self, decisions: list[Decision]) -> None:
        ledger = self.player.ledger
        sub = ledger.subs[-1]
        job = str(self.jobs)
        self.jobs += 1
        ledger.submitted(len(ledger.subs) - 1, job, self.now)
        tasks = [(c, a) for start, end, a in sub.plan.ranges for c in range(start, end)]
        for index in range(sub.plan.elements):
            element = f"{job}_{index}"
            self.tasks[element], self.holding[element] = tasks, []
            self.alive.append(element)
        self.apply(decisions)

    def apply(self, decisions: list[Decision]) -> None:
        for decision in decisions:
            if isinstance(decision, Resolve | Cancelled):
                self.settled.append(decision.call)
            elif isinstance(decision, Withdraw) and (decision.call, decision.attempt) not in self.claims:
                self.claims.add((decision.call, decision.attempt))
                self.client.add((decision.call, decision.attempt))

    def deliver(self, event: tuple[Any, ...]) -> None:
        ledger = self.player.ledger
        kind, call, attempt, *rest = event
        if kind == "take" and self.bulk:
            ledger.taken_all([(call, attempt)], rest[0])
        elif kind == "take":
            ledger.taken(call, attempt, rest[0])
        elif kind == "skip":
            self.apply(ledger.skipped(call, attempt))
        elif kind == "ok" and self.bulk:
            resolved, decisions = ledger.finished_all([(call, attempt)], rest[0], "n1")
            self.apply([Resolve(c, True) for c in resolved] + decisions)
        elif kind == "ok":
            self.apply(ledger.finished(call, attempt, True, element=rest[0]))
        else:
            self.apply(ledger.finished(call, attempt, False, ValueError("x"), rest[0]))

    def step(self) -> None:
        draw = self.data.draw
        action = draw(st.sampled_from(ACTIONS))
        if action == "claim" and self.alive:
            element = draw(st.sampled_from(self.alive))
            free = [t for t in self.tasks[element] if t not in self.claims or t in self.client]
            if free:
                task = draw(st.sampled_from(free))
                if task in self.client:  # the element finds the client's claim and moves on
                    self.unread.append(("skip", *task, element))
                else:
                    self.claims.add(task)
                    self.holding[element].append(task)
                    self.unread.append(("take", *task, element))
        elif action == "finish":
            busy = [e for e in self.alive if self.holding[e]]
            if busy:
                element = draw(st.sampled_from(busy))
                task = self.holding[element].pop(0)
                result = (draw(st.sampled_from(["ok", "raise"])), *task, element)
                (self.slow if draw(st.booleans()) else self.unread).append(result)
        elif action == "end" and self.alive:
            element = draw(st.sampled_from(self.alive))
            self.end(element, draw(st.sampled_from(ENDS)))
        elif action == "read" and (self.unread or self.slow):
            queue = draw(st.sampled_from([q for q in (self.unread, self.slow) if q]))
            event = queue.pop(draw(st.integers(0, len(queue) - 1)))
            self.read.append(event)
            self.deliver(event)
        elif action == "again" and self.read:
            self.deliver(draw(st.sampled_from(self.read)))
        elif action == "tick":
            self.now += draw(st.sampled_from([0.5, 3.0, 10.0]))
            self.tick()
        elif action == "cancel":
            self.cancel(draw(st.integers(0, self.player.n_calls - 1)))
        elif action == "resubmit":
            self.resubmit()

    def end(self, element: str, state: JobState) -> None:
        if state is not S.REQUEUED:
            self.alive.remove(element)
            self.ended[element] = state
        statuses = {e: ElementStatus(e, S.RUNNING) for e in self.alive}
        statuses |= {e: ElementStatus(e, s, "n1") for e, s in self.ended.items()}
        self.player.ledger.element_status(statuses, self.now, LOST_AFTER)

    def tick(self) -> None:
        ledger = self.player.ledger
        if ledger.orphans_due(self.now, GRACE):
            while self.unread:  # one more look at the work dir first, as the engine does
                self.read.append(self.unread.pop(0))
                self.deliver(self.read[-1])
            for orphan in ledger.orphans(self.now, GRACE):
                self.apply(self.player.fail(orphan))

    def cancel(self, call: int) -> None:
        task = (call, self.player.ledger.attempt(call))
        if task not in self.claims and not self.player.ledger.phase(call).is_final:
            self.claims.add(task)
            self.client.add(task)
            if self.player.ledger.cancel(call):
                self.settled.append(call)

    def resubmit(self) -> None:
        retries = self.player.ledger.retries()
        if retries:
            tasks = [(c, a) for c, a, _ in retries]
            plan = plan_tasks(len(self.player.ledger.subs), tasks, self.limits(2))
            self.add(self.player.ledger.add_submission(substate(plan, retries[0][2])))

    def finish_all(self) -> None:
        """Every element ends, every record is read, every grace period passes."""
        for _ in range(10):
            for element in list(self.alive):
                self.end(element, self.data.draw(st.sampled_from([S.COMPLETED, S.NODE_FAIL])))
            self.now += GRACE + 1
            self.tick()
            while self.slow:  # results seen only after their calls were given up on
                self.read.append(self.slow.pop(0))
                self.deliver(self.read[-1])
            self.resubmit()
            if not self.alive:
                break


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    n_calls=st.integers(1, 5),
    elements=st.integers(1, 3),
    retries=st.integers(0, 2),
    retry_on=st.booleans(),
    steps=st.integers(0, 60),
    bulk=st.booleans(),
)
def test_random_runs_settle_every_call_exactly_once(
    data: st.DataObject, n_calls: int, elements: int, retries: int, retry_on: bool, steps: int, bulk: bool
) -> None:
    policy = RetryPolicy(max_retries=retries, retry_on=(ValueError,) if retry_on else ())
    world = World(data, n_calls, elements, policy, bulk)
    for _ in range(steps):
        world.step()
        assert len(world.settled) == len(set(world.settled)), world.settled
    world.finish_all()
    ledger = world.player.ledger
    assert sorted(world.settled) == list(range(n_calls))
    assert ledger.done and ledger.unclaimed() == [] and ledger.holders() == set()
    counts = ledger.counts()
    assert counts.done + counts.failed + counts.cancelled == n_calls


def ledger_view(ledger: Ledger) -> tuple[object, ...]:
    calls = range(ledger.n_calls)
    return (
        [(ledger.phase(c), ledger.attempt(c), ledger.holder(c)) for c in calls],
        ledger.counts(), ledger.holders(), ledger.started, ledger.unclaimed(),
    )  # fmt: skip


def test_runs_of_takes_and_results_decide_as_the_same_events_one_by_one() -> None:
    """A claim's takes and a run's results in bulk (the engine's hot path, done inline for
    the usual case) leave the ledger as the same events one at a time, unusual ones too: a
    call taken twice, a later attempt's take, a stale result, a claim read after its
    element ended."""
    one, bulk = Ledger(12, TWO_RETRIES), Ledger(12, TWO_RETRIES)
    for ledger in (one, bulk):
        ledger.add_submission(
            substate(plan_batch(12, Limits(max_array_size=1001, max_submit_jobs=None, slots=3))[0])
        )
        ledger.submitted(0, "100", now=0.0)
        ledger.element_status({"100_2": ElementStatus("100_2", S.COMPLETED, "n1")}, 0.0, LOST_AFTER)
    claims = [
        ("100_0", [(0, 0), (1, 0), (2, 0), (3, 0)]),
        ("100_1", [(3, 0), (4, 0), (5, 1), (6, 0)]),  # 3 is 100_0's; attempt 1 of 5 is not current
        ("100_2", [(7, 0), (8, 0)]),  # read after its element ended: its calls are due
    ]
    results = [("100_0", [(0, 0), (2, 0), (9, 0)]), ("100_1", [(4, 0), (4, 0), (6, 0), (5, 1)])]
    for element, tasks in claims:
        started = [c for c, a in tasks if one.taken(c, a, element)]
        assert bulk.taken_all(tasks, element) == started
    for element, tasks in results:
        decided = [show(d) for c, a in tasks for d in one.finished(c, a, True, element=element, host="n1")]
        resolved, decisions = bulk.finished_all(tasks, element, "n1")
        assert [f"done {c}" for c in resolved] + [show(d) for d in decisions] == decided
    assert ledger_view(bulk) == ledger_view(one)
    assert bulk.orphans(GRACE + 1, GRACE) == one.orphans(GRACE + 1, GRACE)
