"""The poll loop's clock (corral.engine.policy.PollTimer): when streams are read and the
scheduler asked, as a table of what each tick saw."""

from __future__ import annotations

import pytest

from corral.engine.policy import PollPolicy, PollTimer

POLICY = PollPolicy(scheduler_min=1.0, scheduler_max=15.0, growth=1.5, backoff_max=60.0)


def test_queries_slow_down_while_nothing_changes_and_speed_up_when_something_does() -> None:
    timer = PollTimer(POLICY, now=0.0)
    assert not timer.due(0.5) and timer.due(1.0)
    waits = []
    for _ in range(8):
        timer.answered(changed=False, holding=False, quiet=False)
        waits.append(timer.sched_wait)
    assert waits == [1.5, 2.25, 3.375, 5.0625, 7.59375, 11.390625, 15.0, 15.0]
    timer.answered(changed=True, holding=False, quiet=False)
    assert timer.sched_wait == 1.0
    timer.answered(changed=False, holding=True, quiet=True)  # held-back submissions: keep asking
    assert timer.sched_wait == 1.0


def test_while_the_streams_tell_all_the_scheduler_is_asked_every_90_s() -> None:
    timer = PollTimer(POLICY, now=0.0)
    timer.answered(changed=False, holding=False, quiet=True)
    timer.schedule(100.0, asked=True, quiet=True, jitter=1.0)
    assert timer.next_query == 190.0 == 100.0 + 6 * POLICY.scheduler_max
    timer.schedule(110.0, asked=False, quiet=True, jitter=1.0)
    assert timer.next_query == 190.0  # still quiet: no change
    timer.schedule(120.0, asked=False, quiet=False, jitter=1.0)  # an element went silent
    assert timer.next_query == 121.0 and timer.sched_wait == 1.0


def test_failed_queries_back_off_exponentially_up_to_a_minute_and_reset_on_an_answer() -> None:
    timer = PollTimer(POLICY, now=0.0)
    assert [timer.failed() for _ in range(7)] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert timer.failures == 7
    timer.answered(changed=True, holding=False, quiet=False)
    assert timer.failures == 0 and timer.sched_wait == 1.0


@pytest.mark.parametrize(
    ("since_activity", "scan_cost", "expected"),
    [(0.5, 0.0, 0.02), (2.5, 0.0, 0.025), (2.5, 0.1, 0.2)],
)
def test_streams_are_read_fast_after_activity_then_slower_and_never_above_a_third_of_a_core(
    since_activity: float, scan_cost: float, expected: float
) -> None:
    timer = PollTimer(POLICY, now=0.0)
    timer.answered(changed=False, holding=False, quiet=True)
    timer.schedule(100.0, asked=True, quiet=True, jitter=1.0)  # the next query is 90 s away
    timer.active(100.0)
    assert timer.wait(100.0 + since_activity, scan_cost) == pytest.approx(expected)


def test_a_query_due_sooner_than_the_next_read_cuts_the_wait() -> None:
    timer = PollTimer(POLICY, now=0.0)
    assert timer.wait(0.99, 0.0) == pytest.approx(0.01)
    assert timer.wait(5.0, 0.0) == 0.0
