"""What the ledger (:mod:`corral.engine.ledger`) knows of a batch's submissions: which
(call, attempt) pairs each may run, which of its elements ended and when, and where a call's
chance to run ended. No I/O; the elements' states come from :class:`SubState`.

Lookups stay cheap at 100,000 calls: a static call's submission is one array entry, a
submission's ranges are searched by bisection (a resubmission holds one range per call), and
ended elements wait in a heap until their grace period is over.
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator

from ..job import ElementStatus, JobState
from .elements import SubState
from .planning import element_of_call

#: Where a call's chance to run ended: (submission, element index).
End = tuple[int, int]


class Cover:
    """The (call, attempt) pairs one submission may run, looked up in O(log ranges)."""

    __slots__ = ("ranges", "reach", "starts")

    def __init__(self, ranges: Iterable[tuple[int, int, int]]) -> None:
        self.ranges = sorted(ranges)
        self.starts = [r[0] for r in self.ranges]
        self.reach: list[int] = []  # the furthest end among the ranges up to each one
        for _, end, _ in self.ranges:
            self.reach.append(max(end, self.reach[-1] if self.reach else end))

    def covers(self, call: int, attempt: int) -> bool:
        j = bisect_right(self.starts, call) - 1
        while j >= 0 and self.reach[j] > call:
            _, end, covered = self.ranges[j]
            if call < end and covered == attempt:
                return True
            j -= 1
        return False

    def tasks(self, n_calls: int) -> Iterator[tuple[int, int]]:
        """Every (call, attempt) pair it covers, below ``n_calls``."""
        for start, end, attempt in self.ranges:
            for call in range(start, min(end, n_calls)):
                yield call, attempt


class Submissions:
    """A batch's submissions, as the ledger sees them."""

    def __init__(self, n_calls: int) -> None:
        self.n_calls = n_calls
        self.subs: list[SubState] = []
        self.covers: list[Cover] = []
        self._static_of = array("i", [-1]) * n_calls  # the static submission that runs a call
        self._job_sub: dict[str, int] = {}  # job id -> submission
        self._ending: list[tuple[float, int, int]] = []  # heap of (final at, sub, index)
        self.final_ids: set[str] = set()  # the elements that ended, for a lookup per claim

    def add(self, sub: SubState) -> int:
        number = len(self.subs)
        self.subs.append(sub)
        self.covers.append(Cover(sub.plan.ranges))
        if sub.job_id is not None:
            self._job_sub[sub.job_id] = number
        if sub.plan.ranges and element_of_call(sub.plan, sub.plan.ranges[0][0]) is not None:
            for call, _ in self.covers[number].tasks(self.n_calls):
                self._static_of[call] = number
        return number

    def submitted(self, number: int, job_id: str, now: float | None) -> None:
        sub = self.subs[number]
        sub.job_id = job_id
        if now is not None:
            sub.submitted_at = sub.last_seen = now
        self._job_sub[job_id] = number

    def take_report(self, statuses: dict[str, ElementStatus], now: float, lost_after: float) -> int:
        ended = 0
        for number, sub in enumerate(self.subs):
            before = len(sub.final_at)
            if sub.take_report(statuses, now, lost_after):
                for index in list(sub.final_at)[before:]:  # final_at only grows, in order
                    heapq.heappush(self._ending, (sub.final_at[index], number, index))
                    self.final_ids.add(sub.element(index))
                    ended += 1
        return ended

    def ended(self, number: int, index: int, status: ElementStatus, now: float) -> None:
        sub = self.subs[number]
        if index not in sub.final_at:
            sub.status[index] = status
            sub.final_at[index] = now
            heapq.heappush(self._ending, (now, number, index))
            self.final_ids.add(sub.element(index))

    def expiring(self, now: float, grace: float) -> bool:
        """True when some element's grace period is over and it was not looked at yet."""
        return bool(self._ending) and self._ending[0][0] + grace <= now

    def expired(self, now: float, grace: float) -> list[End]:
        """The elements whose grace period ran out since the last call, each once."""
        out: list[End] = []
        while self.expiring(now, grace):
            _, number, index = heapq.heappop(self._ending)
            out.append((number, index))
        return out

    # -- lookups --------------------------------------------------------------------------------

    def of_job(self, job_id: str) -> int | None:
        """The submission of an array job, or of one of its elements (``"<job>_<index>"``)."""
        job = job_id.split("_", 1)[0]
        number = self._job_sub.get(job)
        if number is None or self.subs[number].job_id != job:  # its job id was set elsewhere
            number = next((n for n, s in enumerate(self.subs) if s.job_id == job), None)
        return number

    def element(self, element: str) -> End | None:
        """The submission and index of an element id, if it is one of ours."""
        number = self.of_job(element)
        job, _, index = element.rpartition("_")
        if number is None or not index.isdigit() or self.subs[number].element(int(index)) != element:
            return None
        return number, int(index)

    def final_element(self, element: str) -> End | None:
        """The submission and index of an element that ended, else None."""
        found = self.element(element)
        return found if found is not None and found[1] in self.subs[found[0]].final_at else None

    def static_element(self, call: int, attempt: int) -> End | None:
        """For a static plan, the submission and element index that run ``attempt`` of
        ``call``."""
        number = self._static_of[call]
        if number < 0 or not self.covers[number].covers(call, attempt):
            return None
        index = element_of_call(self.subs[number].plan, call)
        return None if index is None else (number, index)

    def job_id(self, call: int, attempt: int) -> str | None:
        """The job that runs ``attempt`` of ``call`` when no element took it yet: its static
        element, else the first submitted array that may run it (a lone element: that one)."""
        static = self.static_element(call, attempt)
        index: int | None
        if static is not None:
            sub, index = self.subs[static[0]], static[1]
        else:
            found = [self.subs[n] for n in self.covering(call, attempt) if self.subs[n].job_id]
            if not found:
                return None
            sub = found[0]
            index = 0 if sub.plan.elements == 1 else None
        if sub.job_id is None:
            return None
        return sub.element(index) if index is not None else sub.job_id

    def covering(self, call: int, attempt: int) -> list[int]:
        """The submissions whose elements may run ``attempt`` of ``call``."""
        return [n for n, cover in enumerate(self.covers) if cover.covers(call, attempt)]

    def chunk(self, number: int, index: int) -> range:
        """The calls a static element runs (empty for pull submissions)."""
        plan = self.subs[number].plan
        if element_of_call(plan, plan.ranges[0][0]) is None:
            return range(0)
        first = plan.ranges[0][0] + index * plan.chunk
        return range(first, min(first + plan.chunk, self.n_calls))

    def unclaimed_end(self, call: int, attempt: int, memo: dict[tuple[int, ...], End | None]) -> End | None:
        """Where the chance of a call no element took ended: its own element (static), or
        the last element of its submissions to end once all have (pull), preferring one
        that did not complete. ``memo`` keeps the answer per set of submissions."""
        static = self.static_element(call, attempt)
        if static is not None:
            return static if static[1] in self.subs[static[0]].final_at else None
        numbers = tuple(self.covering(call, attempt))
        if numbers not in memo:
            memo[numbers] = self._last_end(numbers)
        return memo[numbers]

    def _last_end(self, numbers: tuple[int, ...]) -> End | None:
        subs = self.subs
        if not numbers or not all(subs[n].all_final for n in numbers):
            return None
        ends = [(n, i) for n in numbers if subs[n].submitted for i in subs[n].final_at]
        failing = [(n, i) for n, i in ends if subs[n].status[i].state is not JobState.COMPLETED]
        if not ends:
            return None
        return max(failing or ends, key=lambda e: subs[e[0]].final_at[e[1]])

    def live_job_ids(self, done: bool) -> list[str]:
        """The jobs to ask the scheduler about: those with elements not final, and those
        with a failed element whose exit code is not known yet while calls wait (``done``
        False)."""
        return [
            s.job_id
            for s in self.subs
            if s.job_id is not None and (not s.all_final or (not done and s.exit_unknown))
        ]
