"""The per-call ledger of one batch: events in, decisions out, no I/O.

Everything the engine learns about a batch's calls arrives here as an event, and the ledger
answers with the decisions to carry out (complete a future, resubmit a call, fail it). It
reads no file, holds no future and reads no clock (times come in as arguments), so the same
events give the same decisions live, in a table test, or replayed from a batch folder.

A call moves through the phases of :class:`~.ledger_values.Phase` (drawn there).

Every event may arrive twice (a requeued element reports again, a replay reads a stream
again): the second one changes nothing and decides nothing. Events of an attempt that is not
current yet (a replay reading a later attempt first) wait until that attempt is current.

Per-call state lives in flat arrays indexed by call, so 100,000 calls cost a few MB. An
element's end is examined once its grace period is over, through a heap of element ends, so
a tick in which no element's grace ran out costs nothing, whatever the number of calls.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import JobError
from ..job import Attempt, ElementStatus
from ..resources import Resources
from ..retry import RetryPolicy
from .elements import SubState
from .ledger_calls import DONE, TAKEN, WAITING, Calls
from .ledger_subs import End, Submissions
from .ledger_values import (
    STATE_OF_PHASE,
    Cancelled,
    Counts,
    Decision,
    Orphan,
    Phase,
    Resolve,
    Retry,
    Withdraw,
)

#: The ledger's whole vocabulary, importable from here.
__all__ = [
    "STATE_OF_PHASE", "Cancelled", "Counts", "Decision", "Ledger", "Orphan", "Phase", "Resolve", "Retry",
    "Withdraw",
]  # fmt: skip

_Result = tuple[bool, BaseException | None, str, str]  # ok, error, element, host


class Ledger(Calls):
    """The decisions about one batch of ``n_calls`` calls (see the module docstring).

    Events run under the engine's lock; the queries read one value each and may run in
    user threads."""

    def __init__(self, n_calls: int, retry: RetryPolicy | None = None) -> None:
        super().__init__(n_calls)
        self.retry = retry or RetryPolicy(max_retries=0)
        self.plans = Submissions(n_calls)
        self._retries: list[tuple[int, int, Resources]] = []  # attempts waiting for a submission
        self._settled: set[tuple[int, int]] = set()  # past attempts given up on or read
        self._early_takes: dict[tuple[int, int], str] = {}  # takes of attempts not current yet
        self._early_results: dict[tuple[int, int], _Result] = {}

    @property
    def subs(self) -> list[SubState]:
        """The batch's submissions, numbered by their place here."""
        return self.plans.subs

    # -- submissions and the scheduler's reports ------------------------------------------------

    def add_submission(self, sub: SubState) -> list[Decision]:
        """Take in a submission, numbered ``len(subs)``: its plan says which (call, attempt)
        pairs its elements may take, and for static plans which element runs a call. One of
        a later attempt than a call's current one moves the call on to that attempt (a
        replay that reads the submissions before the failures), which may decide what that
        attempt's early events say."""
        number = self.plans.add(sub)
        decisions: list[Decision] = []
        for start, end, attempt in self.plans.covers[number].ranges:
            if attempt == 0:
                continue  # a first attempt moves no call on (and a map covers every call)
            for call in range(start, min(end, self.n_calls)):
                if attempt > self._attempt[call] and not self.phase(call).is_final:
                    decisions += self._move_on(call, attempt, sub.spec.resources)
        return decisions

    def submitted(self, sub: int, job_id: str, now: float | None = None) -> None:
        """Submission ``sub`` became scheduler job ``job_id`` (at ``now``: lost-job timing)."""
        self.plans.submitted(sub, job_id, now)

    def element_status(self, statuses: dict[str, ElementStatus], now: float, lost_after: float) -> int:
        """Take in one bulk status report (see :meth:`SubState.take_report`); return how many
        elements it made final. Their grace periods start ``now``."""
        return self.plans.take_report(statuses, now, lost_after)

    def element_ended(self, sub: int, index: int, status: ElementStatus, now: float) -> None:
        """An element known to have ended without the scheduler saying so (it died with the
        old client, say)."""
        self.plans.ended(sub, index, status, now)

    def live_job_ids(self) -> list[str]:
        """The jobs to ask the scheduler about (see :meth:`Submissions.live_job_ids`)."""
        return self.plans.live_job_ids(self.done)

    # -- events from the elements' records ------------------------------------------------------

    def taken(self, call: int, attempt: int, element: str) -> bool:
        """An element took ``attempt`` of ``call``; True when this started the call (its
        future now runs)."""
        current, phase = self._attempt[call], self._phase[call]
        if attempt > current:
            self._early_takes[(call, attempt)] = element
        elif attempt < current:
            if (call, attempt) not in self._settled and phase < Phase.DONE:
                self._stale[(call, attempt)] = element
        elif phase == WAITING:
            self._set_phase(call, Phase.TAKEN)
            self._hold(call, element)
            self._started += 1
            if element in self.plans.final_ids:
                self._due.add(call)  # a claim read after its element ended
            return True
        elif phase == TAKEN and self._holder[call] != element:
            self._release(call)  # taken again, by another element, after a requeue
            self._hold(call, element)
        elif phase in (Phase.DONE, Phase.FAILED) and self._holder[call] is None:
            self._holder[call] = element  # its result was read first
            self._started += 1
        return False

    def taken_all(self, tasks: Sequence[tuple[int, int]], element: str) -> list[int]:
        """:meth:`taken` for each of ``tasks`` (one chunk claim's), in order; return the calls
        it started. The usual case (a waiting call's current attempt, taken by an element
        that has not ended) is done inline: a claim may hold thousands of calls."""
        started: list[int] = []
        phase, current, holder = self._phase, self._attempt, self._holder
        inline = element not in self.plans.final_ids
        moved = 0
        for call, attempt in tasks:
            if inline and 0 <= call < self.n_calls and phase[call] == WAITING and attempt == current[call]:
                phase[call] = TAKEN
                holder[call] = element
                self._held.setdefault(element, set()).add(call)
                moved += 1
                started.append(call)
            elif self.taken(call, attempt, element):
                started.append(call)
        self._counts[WAITING] -= moved
        self._counts[TAKEN] += moved
        self._started += moved
        return started

    def finished_all(
        self, results: Sequence[tuple[int, int]], element: str, host: str
    ) -> tuple[list[int], list[Decision]]:
        """:meth:`finished` for each of ``results``, (call, attempt) pairs that each returned
        a value, in order: the calls resolved (ok) the usual way (their current attempt,
        taken), done inline, and the decisions about the others."""
        resolved: list[int] = []
        decisions: list[Decision] = []
        phase, current, holder, held, due = self._phase, self._attempt, self._holder, self._held, self._due
        moved = 0
        for call, attempt in results:
            if 0 <= call < self.n_calls and phase[call] == TAKEN and attempt == current[call]:
                who = holder[call]
                if who is None:
                    holder[call] = element
                elif who in held:
                    calls = held[who]
                    calls.discard(call)
                    if not calls:
                        del held[who]
                phase[call] = DONE
                due.discard(call)
                moved += 1
                resolved.append(call)
            else:
                decisions += self.finished(call, attempt, True, None, element, host)
        self._counts[TAKEN] -= moved
        self._counts[DONE] += moved
        return resolved, decisions

    def finished(
        self,
        call: int,
        attempt: int,
        ok: bool,
        error: BaseException | None = None,
        element: str = "",
        host: str = "",
    ) -> list[Decision]:
        """A result of ``attempt`` of ``call`` was read: ``ok``, or ``error`` (the call's own
        exception, decoded)."""
        current = self._attempt[call]
        if self._phase[call] >= DONE:
            if attempt == current and element and self._holder[call] is None:
                self._holder[call] = element
            return []
        if attempt > current:
            self._early_results[(call, attempt)] = (ok, error, element, host)
            return []
        if attempt < current:
            self._stale.pop((call, attempt), None)
            self._settled.add((call, attempt))
            if not ok:
                return []  # a late failure of an attempt already given up on
            pending = self._phase[call] == WAITING  # nobody runs the next attempt yet: nobody must
            self._end(call, Phase.DONE)
            return [Withdraw(call, current), Resolve(call, True)] if pending else [Resolve(call, True)]
        if self._holder[call] is None and element:
            self._holder[call] = element
        if ok:
            self._end(call, Phase.DONE)
            return [Resolve(call, True)]
        error = error if error is not None else RuntimeError("the call failed without an exception")
        record = Attempt(
            attempt, element or None, f"raised {type(error).__qualname__}", host, str(error)[:200]
        )
        sub = self.plans.of_job(element) if element else None
        return self._decide(call, record, error, sub, started=True)

    def skipped(self, call: int, attempt: int) -> list[Decision]:
        """An element did not run ``attempt`` of ``call``: the client had taken it."""
        if attempt != self._attempt[call] or self._phase[call] != WAITING:
            return []
        self._end(call, Phase.CANCELLED)
        return [Cancelled(call)]

    # -- ends without a result ------------------------------------------------------------------

    def orphans_due(self, now: float, grace: float) -> bool:
        """True when :meth:`orphans` may find something: an element's grace ran out (the
        engine then takes one more look at the work dir first)."""
        return bool(self._due) or self.plans.expiring(now, grace)

    def orphans(self, now: float, grace: float) -> list[Orphan]:
        """Calls whose element has been final for ``grace`` seconds or more with no result.
        Each stays an orphan until :meth:`failed` (or a late result) settles it."""
        pulls: set[int] = set()
        for number, index in self.plans.expired(now, grace):
            self._due.update(self._held.get(self.subs[number].element(index), ()))
            for call in self.plans.chunk(number, index):
                if self._phase[call] == WAITING:
                    self._due.add(call)
            if self.subs[number].all_final and self._counts[WAITING]:
                pulls.add(number)
        for number in pulls:  # submissions all of whose elements ended: calls nobody took
            for call, attempt in self.plans.covers[number].tasks(self.n_calls):
                if self._phase[call] == WAITING and self._attempt[call] == attempt:
                    self._due.add(call)
        found: list[Orphan] = []
        memo: dict[tuple[int, ...], End | None] = {}
        for call in sorted(self._due):
            orphan = self._orphan(call, now, grace, memo)
            if orphan is None:
                self._due.discard(call)  # the expiry of the element it waits for brings it back
            else:
                found.append(orphan)
        return found

    def failed(
        self,
        call: int,
        attempt: int,
        error: BaseException,
        element: str,
        status: ElementStatus,
        started: bool,
    ) -> list[Decision]:
        """The engine's error for an orphan: record the attempt, then retry or resolve
        (nothing when that attempt is settled already: a second identical report)."""
        if attempt != self._attempt[call] or self.phase(call).is_final:
            return []
        self._due.discard(call)
        if isinstance(error, JobError):
            record = Attempt(attempt, error.job_id, error.state.name, error.node, error.reason)
        else:
            record = Attempt(attempt, element or None, status.state.name, status.node, status.reason)
        return self._decide(call, record, error, self.plans.of_job(element), started=started)

    # -- the client -----------------------------------------------------------------------------

    def cancel(self, call: int, error: BaseException | None = None) -> bool:
        """The client took the call's current attempt (its claim won): the call is
        CANCELLED, or FAILED with ``error`` (its submission was refused, say). False when an
        element took it first or the call has ended."""
        if self._phase[call] != WAITING:
            return False
        if error is not None:
            self._errors[call] = error
        self._end(call, Phase.CANCELLED if error is None else Phase.FAILED)
        return True

    def cancel_all(self) -> list[int]:
        """Cancel every call no element has taken; return them."""
        calls = self.unclaimed()
        for call in calls:
            self._end(call, Phase.CANCELLED)
        return calls

    def abandon(self, call: int, error: BaseException) -> Resolve | None:
        """Fail the call with ``error`` at whatever attempt, without a retry (the executor
        cancels its running jobs, or the call's outcome cannot be read)."""
        if self.phase(call).is_final:
            return None
        self._errors[call] = error
        self._end(call, Phase.FAILED)
        return Resolve(call, False, error, self.history(call))

    def past_attempt(self, call: int, record: Attempt) -> None:
        """A failed attempt read back from the work dir (a replay): kept for the history,
        deciding nothing."""
        known = self._history.setdefault(call, [])
        if record.attempt < self._attempt[call] and all(a.attempt != record.attempt for a in known):
            known.append(record)
            known.sort(key=lambda a: a.attempt)

    def retries(self) -> list[tuple[int, int, Resources]]:
        """The (call, attempt, resources) waiting for a new submission, handed out once."""
        waiting = [r for r in self._retries if self._phase[r[0]] == WAITING and self._attempt[r[0]] == r[1]]
        self._retries.clear()
        return waiting

    def put_back(self, retries: Sequence[tuple[int, int, Resources]]) -> None:
        """Retries that could not be planned yet: :meth:`retries` hands them out again."""
        self._retries.extend(retries)

    # -- queries --------------------------------------------------------------------------------

    def job_id_of(self, call: int) -> str | None:
        """The scheduler id that runs the call, as precisely as known: the element that
        took it, else its static element, else its array (a lone element: that one)."""
        who = self._holder[call]
        return who if who is not None else self.plans.job_id(call, self._attempt[call])

    def static_element(self, call: int) -> tuple[SubState, int] | None:
        """For a static plan, the submission and element index that run the call."""
        found = self.plans.static_element(call, self._attempt[call])
        return None if found is None else (self.subs[found[0]], found[1])

    def covering(self, call: int) -> list[SubState]:
        """The submissions whose elements may run the call's current attempt."""
        return [self.subs[n] for n in self.plans.covering(call, self._attempt[call])]

    # -- inside ---------------------------------------------------------------------------------

    def _decide(
        self, call: int, record: Attempt, error: BaseException, sub: int | None, *, started: bool
    ) -> list[Decision]:
        """Keep ``record`` of a failed attempt; retry when the policy allows, else resolve.
        Without a submission to take resources from, nothing is retried (as before)."""
        attempt = self._attempt[call]
        history = self._history.setdefault(call, [])
        history.append(record)
        resources = (
            None
            if sub is None
            else self.retry.next_resources(error, attempt + 1, self.subs[sub].spec.resources, started=started)
        )
        if resources is None:
            self._errors[call] = error
            self._end(call, Phase.FAILED)
            return [Resolve(call, False, error, tuple(history), record)]
        self._settled.add((call, attempt))  # a take of it read from now on holds nothing
        self._retries.append((call, attempt + 1, resources))
        return [Retry(call, attempt + 1, resources, record), *self._move_on(call, attempt + 1, resources)]

    def _move_on(self, call: int, attempt: int, resources: Resources) -> list[Decision]:
        """Move the call on to ``attempt``, then take in that attempt's events read early."""
        self._advance(call, attempt, resources)
        early = self._early_takes.pop((call, attempt), None)
        if early is not None:
            self.taken(call, attempt, early)
        result = self._early_results.pop((call, attempt), None)
        return [] if result is None else self.finished(call, attempt, *result)

    def _orphan(
        self, call: int, now: float, grace: float, memo: dict[tuple[int, ...], End | None]
    ) -> Orphan | None:
        """The call as an orphan, if its chance to run ended ``grace`` ago or more."""
        phase, attempt, who = self._phase[call], self._attempt[call], self._holder[call]
        if phase == TAKEN and who is not None:
            found = self.plans.final_element(who)
        elif phase == WAITING:
            found = self.plans.unclaimed_end(call, attempt, memo)
        else:
            return None
        if found is None:
            return None
        sub = self.subs[found[0]]
        if now - sub.final_at[found[1]] < grace:
            return None
        element = sub.element(found[1])
        return Orphan(call, attempt, element, sub.status[found[1]], phase == TAKEN, found[0], found[1])
