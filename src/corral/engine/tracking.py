"""What the engine knows about one batch: its submissions, which calls were claimed, which
finished, and which failed because their job ended without an outcome.

A call is *resolved* once its future is done: by its outcome file, by a job error, or by a
cancel. A call fails only after its job has been final for ``grace`` seconds with no outcome,
so that outcome files delayed by a slow shared filesystem are still read.

A failure the retry policy forgives (see :mod:`corral.retry`) does not resolve the call: the
call moves on to its next attempt, which waits in ``retries`` until the engine submits it in
a new small array; each failed attempt is recorded in the work dir.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..backends.base import ArraySpec
from ..errors import CorralError, FormatError, JobError, UnsafeWorkDirError
from ..job import Attempt, ElementStatus, JobState, describe_attempts
from ..resources import Resources
from ..retry import RetryPolicy
from ..store.batch import BatchStore, Outcome
from ..store.protocol import Claim, Mode, WorkerOptions, WorkerPlan
from .dependencies import Needs
from .elements import SubState as SubState  # re-exported: the engine takes it from here
from .endings import ended_job_error
from .futures import CorralFuture, decode_outcome
from .planning import Plan, element_of_call

log = logging.getLogger(__name__)

Completion = tuple[CorralFuture, bool, Any]  # future, ok, value or exception


class Owner(Protocol):
    """The engine that watches a batch (:class:`corral.engine.cluster.Cluster`): what the
    batch's futures ask of it."""

    def cancel_call(self, batch: BatchState, call: int) -> bool: ...
    def cancel_job_of(self, batch: BatchState, call: int) -> bool: ...


class BatchState:
    """Bookkeeping of one batch. What changes it runs under the cluster's lock; the futures'
    queries (``job_id_of``, ``state_of``) may run in user threads without it, and so only read
    single values (a set lookup, a dict entry) that are whole at any moment."""

    def __init__(
        self,
        store: BatchStore,
        n_calls: int,
        subs: list[SubState],
        owner: Owner,
        retry: RetryPolicy | None = None,
        *,
        name: str = "call",
        max_running: int | None = None,
        after: BatchState | None = None,
        needs: Needs | None = None,
        worker_options: WorkerOptions | None = None,
        explain: Callable[[ElementStatus, str], ElementStatus] | None = None,
        futures: list[CorralFuture] | None = None,
    ) -> None:
        self.store = store
        self.name = name  # the function's name, which its jobs carry
        self.max_running = max_running  # the throttle its arrays (and resubmissions) get
        self.after = after  # not submitted before this batch is done
        self.needs = needs  # calls of other batches it runs after (the scheduler's dependency)
        self.worker_options = worker_options or WorkerOptions()  # in each submission's plan
        # How the backend reads an element's end from its stderr (a memory kill, say).
        self.explain = explain or (lambda status, stderr: status)
        self.subs = subs
        self.attempts = [0] * n_calls
        # The pending futures of a burst of submits become this batch's (engine/coalesce.py).
        self.futures: list[CorralFuture] = futures or [CorralFuture(self, i) for i in range(n_calls)]
        for call, future in enumerate(futures or ()):
            future.bind(self, call)
        self.resolved: set[int] = set()
        self.claimed: set[tuple[int, int]] = set()  # by elements or by the client
        self.client_claims: set[tuple[int, int]] = set()
        self.first_claim_at: float | None = None  # when we first saw a call start
        self._seen_results: set[tuple[int, int]] = set()
        self._claimants: dict[tuple[int, int], str | None] = {}  # None: not an element's claim
        self._owner = owner
        self.retry = retry or RetryPolicy(max_retries=0)
        self.history: dict[int, list[Attempt]] = {}  # failed attempts, by call
        self.retries: list[tuple[int, Resources]] = []  # next attempts waiting to be submitted
        self._unclaimed = set(range(n_calls))  # calls whose current attempt nobody took
        self._ended_at: list[float] = []  # when elements turned final, until their grace is over

    # -- for the futures ------------------------------------------------------------------------

    def cancel_call(self, call: int) -> bool:
        return self._owner.cancel_call(self, call)

    def cancel_element(self, call: int) -> bool:
        return self._owner.cancel_job_of(self, call)

    def worker_plan(self, plan: Plan, resources: Resources) -> WorkerPlan:
        """What the worker reads for one submission: its plan, the batch's options, and how
        often a call may be requeued from a checkpoint."""
        return plan.worker_plan(self.worker_options, resources.requeues)

    def save_submission(self, plan: Plan, spec: ArraySpec, script: str) -> str:
        """Write a submission's plan (with the batch's options), script, and what attach
        needs; return the script's path."""
        from .submitting import pack_submission

        return self.store.write_submission(
            plan.sub, self.worker_plan(plan, spec.resources), script, pack_submission(plan, spec)
        )

    def task(self, call: int) -> tuple[int, int]:
        return call, self.attempts[call]

    def claimant(self, call: int) -> str | None:
        """The element that took the call's current attempt, if any."""
        task = self.task(call)
        if task not in self.claimed or task in self.client_claims:
            return None
        return self._element_of(task)

    def holders(self) -> set[str]:
        """Elements that took a call which has not ended: one that was requeued (pending
        again) will run it again, so it must not be cancelled as idle."""
        tasks = self.claimed - self.client_claims - self._seen_results
        return {who for t in tasks if t[0] not in self.resolved and (who := self._element_of(t)) is not None}

    def _element_of(self, task: tuple[int, int]) -> str | None:
        """The element named in a claim, read once and then remembered."""
        if task not in self._claimants:
            try:
                claim = self.store.read_claim(*task)
            except FormatError as exc:  # not one corral wrote: no element's, once and for all
                log.warning("%s", exc)
                self._claimants[task] = None
                return None
            if claim is None:
                return None  # not written yet: read again next time
            self._claimants[task] = None if claim.by_client else claim.element
        return self._claimants[task]

    def job_id_of(self, call: int) -> str | None:
        who = self.claimant(call)
        if who is not None:
            return who
        sub, index = self.sub_of(call)
        if sub is None:
            task = self.task(call)
            sub = next((s for s in self.subs if s.job_id and s.covers(task)), None)
            if sub is None:
                return None
            index = 0 if sub.plan.elements == 1 else None  # a lone element is the call's own
        if sub.job_id is None:
            return None
        return sub.element(index) if index is not None else sub.job_id

    def state_of(self, call: int) -> JobState:
        future = self.futures[call]
        if future.cancelled():
            return JobState.CANCELLED
        if future.done():
            error = future.exception()
            if error is None:
                return JobState.COMPLETED
            return error.state if isinstance(error, JobError) else JobState.FAILED
        return JobState.RUNNING if self.claimant(call) else JobState.PENDING

    def sub_of(self, call: int) -> tuple[SubState | None, int | None]:
        """For a static plan, the submission and element index that run ``call``."""
        task = self.task(call)
        for sub in self.subs:
            if sub.plan.mode is Mode.STATIC and sub.covers(task):
                return sub, element_of_call(sub.plan, call)
        return None, None

    def dependency_of(self, call: int) -> list[tuple[str, int | None]] | None:
        """The jobs a batch waiting on ``call`` must wait for: the element that runs it
        (static plans), else every array that may run it, as (job id, element index or
        None); None while one of them has no job id yet."""
        sub, index = self.sub_of(call)
        if sub is not None:
            return [(sub.job_id, index)] if sub.job_id is not None else None
        subs = [s for s in self.subs if s.covers(self.task(call))]
        if not subs or any(s.job_id is None for s in subs):
            return None
        return [(s.job_id, None) for s in subs if s.job_id is not None]

    def sub_of_job(self, job_id: str) -> SubState | None:
        """The submission of an array job, or of one of its elements (``"<job>_<index>"``)."""
        job = job_id.split("_", 1)[0]
        return next((s for s in self.subs if s.job_id == job), None)

    # -- reading the work dir -------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return len(self.resolved) == len(self.futures)

    def unclaimed_count(self) -> int:
        """Calls whose current attempt no element (nor the client) has taken yet."""
        return len(self._unclaimed)

    def unclaimed(self) -> list[int]:
        return sorted(self._unclaimed)

    def scan(self) -> list[Completion]:
        """Read new claims and outcomes; return the futures they complete."""
        completions: list[Completion] = []
        for task in self.store.claimed() - self.claimed:
            self.claimed.add(task)
            if task != self.task(task[0]):
                continue
            self._unclaimed.discard(task[0])
            if self.first_claim_at is None and task not in self.client_claims:
                self.first_claim_at = time.monotonic()
            future = self.futures[task[0]]
            if task not in self.client_claims and not (future.running() or future.done()):
                future.set_running_or_notify_cancel()
        for task in sorted(self.store.finished() - self._seen_results):
            self._seen_results.add(task)
            call = task[0]
            if call in self.resolved:
                continue
            try:
                outcome = self.store.read_outcome(*task)
            except UnsafeWorkDirError as exc:  # not the user's own file: refused unread, fails the call
                self._resolve(call)
                completions.append((self.futures[call], False, exc))
                continue
            except ValueError as exc:  # not an outcome corral wrote: fail the call, not the loop
                self._resolve(call)
                error = CorralError(
                    f"call {call} of {self.store.name}: results/{task[0]}.{task[1]}.pkl: {exc}"
                )
                completions.append((self.futures[call], False, error))
                continue
            current = task == self.task(call)
            if not current and not outcome.ok:
                continue  # a late failure of an attempt already given up on
            ok, value = decode_outcome(outcome, call, self.store.name, self.store.path)
            if not ok and self._forgiven(call, value, outcome):
                continue
            if not current:  # an earlier attempt succeeded after all: the next need not run
                self.claim_for_client(call)
            self._resolve(call)
            if not ok and len(self.history.get(call, ())) > 1 and sys.version_info >= (3, 11):
                value.add_note(describe_attempts(self.history[call]))
            completions.append((self.futures[call], ok, value))
        return completions

    def _forgiven(self, call: int, error: BaseException, outcome: Outcome) -> bool:
        """Record the call's exception as a failed attempt; True when it is retried."""
        kind = type(error)
        record = Attempt(
            self.attempts[call], outcome.element or None, f"raised {kind.__qualname__}", outcome.host,
            str(error)[:200],
        )  # fmt: skip
        sub = self.sub_of_job(outcome.element) if outcome.element else None
        return self.next_attempt(call, record, error, sub)

    def next_attempt(
        self, call: int, record: Attempt, error: BaseException, sub: SubState | None, *, started: bool = True
    ) -> bool:
        """Keep ``record``; when the retry policy allows, queue the call's next attempt."""
        self.history.setdefault(call, []).append(record)
        try:
            self.store.record_attempt(call, record.attempt, record.to_json())
        except OSError as exc:
            log.warning("could not record attempt %s of call %d: %s", record.attempt, call, exc)
        if sub is None:
            return False
        resources = self.retry.next_resources(
            error, self.attempts[call] + 1, sub.spec.resources, started=started
        )
        if resources is None:
            return False
        self.attempts[call] += 1
        self._unclaimed.add(call)
        self.retries.append((call, resources))
        log.warning(
            "call %d of %s: %s; resubmitting it (attempt %d of at most %d)",
            call, self.store.name, record, self.attempts[call] + 1, self.retry.max_retries + 1,
        )  # fmt: skip
        return True

    def _resolve(self, call: int) -> None:
        self.resolved.add(call)
        self._unclaimed.discard(call)

    # -- the scheduler's view -------------------------------------------------------------------

    def live_job_ids(self) -> list[str]:
        """The jobs to ask the scheduler about: those with elements not final, and those
        with a failed element whose exit code is not known yet (SLURM's accounting may learn
        it a little after the element ended), while the batch's calls wait for it."""
        return [
            s.job_id
            for s in self.subs
            if s.job_id is not None and (not s.all_final or (not self.done and s.exit_unknown))
        ]

    def update(self, statuses: dict[str, ElementStatus], now: float, lost_after: float) -> None:
        """Take in one bulk status report. An element missing from two reports in a row that
        show other elements of its array was cancelled before it started (SLURM keeps no
        record of those); an element whose whole array the scheduler has not known for
        ``lost_after`` seconds is LOST."""
        for sub in self.subs:
            self._ended_at += [now] * sub.take_report(statuses, now, lost_after)

    def failures(self, now: float, grace: float) -> list[Completion]:
        """Calls whose job has been final, with no outcome, for longer than ``grace``, and
        the outcomes found by one more look at the work dir first. Only looked for when an
        element's grace period is over, not on every tick."""
        if not self._ended_at or min(self._ended_at) + grace > now:
            return []
        by_element = {
            sub.element(i): (sub, i) for sub in self.subs if sub.job_id is not None for i in sub.final_at
        }
        if not by_element:  # no element has ended: nothing can have failed (the common case)
            return []
        # An outcome written after this tick's scan but before the status report that made
        # its element final must not be taken for a failure: with no grace (the local
        # backend), this look is what makes the absence of an outcome conclusive.
        try:
            failed = self.scan()
        except OSError as exc:
            log.warning("could not read %s: %s", self.store.path, exc)
            return []  # decide on a later tick
        self._ended_at = [t for t in self._ended_at if t + grace > now]
        for call in range(len(self.futures)):
            if call in self.resolved or self.task(call) in self.client_claims:
                continue
            who = self.claimant(call)
            if who is not None:
                found = by_element.get(who)
            else:
                found = self._unclaimed_end(call)
            if found is None:
                continue
            sub, index = found
            if now - sub.final_at[index] < grace:
                continue
            error = ended_job_error(self, call, sub, index, who)
            record = Attempt(self.attempts[call], error.job_id, error.state.name, error.node, error.reason)
            if self.next_attempt(call, record, error, sub, started=who is not None):
                continue
            if len(self.history[call]) > 1:
                error = ended_job_error(self, call, sub, index, who, tuple(self.history[call]))
            self._resolve(call)
            failed.append((self.futures[call], False, error))
        return failed

    def _unclaimed_end(self, call: int) -> tuple[SubState, int] | None:
        """Where an unclaimed call's chance to run ended: its own element (static), or the
        last element of the batch to end (pull), preferring one that did not complete."""
        sub, index = self.sub_of(call)
        if sub is not None and index is not None:
            return (sub, index) if index in sub.final_at else None
        task = self.task(call)
        subs = [s for s in self.subs if s.covers(task)]
        if not subs or not all(s.all_final for s in subs):
            return None
        ends = [(s, i) for s in subs if s.submitted for i in s.final_at]
        if not ends:
            return None
        failing = [e for e in ends if e[0].status[e[1]].state is not JobState.COMPLETED]
        return max(failing or ends, key=lambda e: e[0].final_at[e[1]])

    def cancelled_before(self, call: int) -> None:
        """The client took the call's current attempt earlier (a cancel): keep it so."""
        self.claimed.add(self.task(call))
        self.client_claims.add(self.task(call))
        self._resolve(call)

    def claim_for_client(self, call: int) -> bool:
        """Take the call's current attempt so no element will run it (a cancel)."""
        task = self.task(call)
        if call in self.resolved or task in self.claimed:
            return False
        if not self.store.claim(*task, Claim.CLIENT_CANCEL):
            self.claimed.add(task)
            return False
        self.claimed.add(task)
        self.client_claims.add(task)
        self._resolve(call)
        return True


def now() -> float:
    return time.monotonic()
