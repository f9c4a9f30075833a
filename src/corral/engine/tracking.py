"""One batch as the engine holds it: its futures, its :class:`~corral.engine.ledger.Ledger`
(the decisions, pure), and the :class:`~corral.store.replay.Replay` of its elements' streams
(the facts, read incrementally). This module is the I/O between them:

* :meth:`BatchState.scan` reads, with ONE transport operation, the bytes the elements
  appended to their streams since the last tick, turns the records into ledger events, and
  carries out the decisions (complete a future, record an attempt, withdraw an attempt);
* :meth:`BatchState.failures` builds the error of each call whose element ended without its
  result (that needs the element's stderr) and hands it back to the ledger;
* cancelling takes calls away from the elements through the work dir (see
  :mod:`corral.engine.cancelling`).

A call fails only after its element has been final for ``grace`` seconds with no result, so
that records delayed by a slow shared filesystem are still read. A failure the retry policy
forgives moves the call on to its next attempt, which the engine resubmits in a new array.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ..backends.base import ArraySpec
from ..errors import JobError, UnsafeWorkDirError
from ..job import ElementStatus, JobState, describe_attempts
from ..resources import Resources
from ..retry import RetryPolicy
from ..store.batch import BatchStore
from ..store.protocol import WorkerOptions, WorkerPlan
from ..store.replay import Replay
from ..store.stream_codec import Progress
from .dependencies import Needs
from .echo import Sink
from .elements import SubState as SubState  # re-exported: the engine takes it from here
from .endings import ended_job_error
from .futures import CorralFuture, Futures, mark_cancelled
from .intake import Completion as Completion
from .intake import Intake
from .ledger import Cancelled, Decision, Ledger, Phase, Resolve, Retry, Withdraw
from .planning import Plan

log = logging.getLogger(__name__)


class Owner(Protocol):
    """The engine that watches a batch (:class:`corral.engine.cluster.Cluster`): what the
    batch's futures ask of it."""

    def cancel_call(self, batch: BatchState, call: int) -> bool: ...
    def cancel_unclaimed(self, batch: BatchState) -> None: ...
    def cancel_job_of(self, batch: BatchState, call: int) -> bool: ...


class BatchState:
    """One batch. What changes it runs under the cluster's lock; the futures' queries
    (``job_id_of``, ``state_of``, ``output``) may run in user threads without it, and so
    only read single values that are whole at any moment."""

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
        needs: Needs | None = None,
        worker_options: WorkerOptions | None = None,
        explain: Callable[[ElementStatus, str], ElementStatus] | None = None,
        futures: list[CorralFuture] | None = None,
        echo: Sink | None = None,
    ) -> None:
        self.store = store
        self.name = name  # the function's name, which its jobs carry
        self.max_running = max_running  # the throttle its arrays (and resubmissions) get
        self.needs = needs  # calls of other batches it runs after (the scheduler's dependency)
        self.worker_options = worker_options or WorkerOptions()  # in each submission's plan
        # How the backend reads an element's end from its stderr (a memory kill, say).
        self.explain = explain or (lambda status, stderr: status)
        self.ledger = Ledger(n_calls, retry)
        self.retry = self.ledger.retry
        self.replay = Replay(n_calls, self.tasks_of)
        # The pending futures of a burst of submits become this batch's (engine/coalesce.py).
        phase: Callable[[int], str] = lambda call: self.ledger.phase(call).name.lower()  # noqa: E731
        self.futures = Futures.of(self, futures, phase) if futures else Futures(self, n_calls, phase)
        self._owner = owner
        self.intake = Intake(store, self.ledger, self.replay, self.futures, self.apply, echo)
        self._tasks: dict[int, list[tuple[int, int]]] = {}
        for sub in subs:
            self.add_sub(sub)

    # -- submissions ----------------------------------------------------------------------------

    @property
    def subs(self) -> Sequence[SubState]:
        """The batch's submissions, in order (add one with :meth:`add_sub`)."""
        return self.ledger.subs

    def add_sub(self, sub: SubState) -> list[Completion]:
        """Take in submission ``sub`` (numbered ``len(subs)``, as its plan is)."""
        return self.apply(self.ledger.add_submission(sub))

    def tasks_of(self, sub: int) -> list[tuple[int, int]]:
        """Submission ``sub``'s task list, in plan order (chunk claims name its positions)."""
        if sub not in self._tasks:
            ranges = self.subs[sub].plan.ranges if sub < len(self.subs) else ()
            self._tasks[sub] = [(c, a) for start, end, a in ranges for c in range(start, end)]
        return self._tasks[sub]

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

    # -- for the futures ------------------------------------------------------------------------

    def cancel_call(self, call: int) -> bool:
        return self._owner.cancel_call(self, call)

    def cancel_unclaimed(self) -> None:
        """Cancel every call no element has taken; running calls run on."""
        self._owner.cancel_unclaimed(self)

    def cancel_element(self, call: int) -> bool:
        return self._owner.cancel_job_of(self, call)

    def task(self, call: int) -> tuple[int, int]:
        return call, self.ledger.attempt(call)

    def claimant(self, call: int) -> str | None:
        """The element that took the call's current attempt, if any."""
        return self.ledger.holder(call) if self.ledger.phase(call) is not Phase.CANCELLED else None

    def holders(self) -> set[str]:
        """Elements that took a call which has not ended: one that was requeued (pending
        again) will run it again, so it must not be cancelled as idle."""
        return self.ledger.holders()

    def job_id_of(self, call: int) -> str | None:
        return self.ledger.job_id_of(call)

    def state_of(self, call: int) -> JobState:
        future = self.futures[call]
        if future.cancelled():
            return JobState.CANCELLED
        if future.done():
            error = future.exception()
            if error is None:
                return JobState.COMPLETED
            return error.state if isinstance(error, JobError) else JobState.FAILED
        return JobState.RUNNING if self.ledger.phase(call) is Phase.TAKEN else JobState.PENDING

    def output(self, call: int, stream: str) -> str:
        """What the call's current attempt printed on ``stream`` (``"out"``/``"err"``) so far."""
        where = self.replay.output(*self.task(call))
        if where is None:
            return ""
        element, out, err = where
        start, end = out if stream == "out" else err
        return self.store.read_output(element, stream, start, end)

    def progress_of(self, call: int) -> Progress | None:
        """The latest ``corral.progress`` record of the call's current attempt."""
        found = self.replay.progress.get(call)
        return found if found is not None and found.attempt == self.ledger.attempt(call) else None

    def request_stop(self, call: int) -> bool:
        """Ask the running call to stop (``corral.Stopped`` at its next progress()); False
        when it is not running."""
        if self.ledger.phase(call) is not Phase.TAKEN:
            return False
        self.store.request_stop(*self.task(call))
        return True

    def sub_of(self, call: int) -> tuple[SubState | None, int | None]:
        """For a static plan, the submission and element index that run ``call``."""
        found = self.ledger.static_element(call)
        return (None, None) if found is None else found

    def dependency_of(self, call: int) -> list[tuple[str, int | None]] | None:
        """The jobs a batch waiting on ``call`` must wait for: the element that runs it
        (static plans), else every array that may run it, as (job id, element index or
        None); None while one of them has no job id yet."""
        sub, index = self.sub_of(call)
        if sub is not None:
            return [(sub.job_id, index)] if sub.job_id is not None else None
        subs = self.ledger.covering(call)
        if not subs or any(s.job_id is None for s in subs):
            return None
        return [(s.job_id, None) for s in subs if s.job_id is not None]

    def sub_of_job(self, job_id: str) -> SubState | None:
        """The submission of an array job, or of one of its elements (``"<job>_<index>"``)."""
        job = job_id.split("_", 1)[0]
        return next((s for s in self.subs if s.job_id == job), None)

    # -- where the calls stand ------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.ledger.done

    def is_resolved(self, call: int) -> bool:
        return self.ledger.phase(call).is_final

    def open_calls(self) -> int:
        """Calls not ended yet."""
        counts = self.ledger.counts()
        return counts.pending + counts.running

    def unclaimed_count(self) -> int:
        """Calls whose current attempt no element (nor the client) has taken yet."""
        return self.ledger.unclaimed_count()

    def unclaimed(self) -> list[int]:
        return self.ledger.unclaimed()

    def live_job_ids(self) -> list[str]:
        """The jobs to ask the scheduler about (see :meth:`Ledger.live_job_ids`)."""
        return self.ledger.live_job_ids()

    # -- reading the streams --------------------------------------------------------------------

    def scan(self, appended: Mapping[str, bytes] | None = None) -> list[Completion]:
        """Read what the elements appended since the last scan (one transport operation),
        or take what :func:`scan_all` read for this batch; return the futures it completes."""
        return self.intake.scan(appended)

    @property
    def first_claim_at(self) -> float | None:
        """When the first call of the batch was seen to start."""
        return self.intake.first_claim_at

    def quiet(self, now: float) -> bool:
        """True when the scheduler can tell nothing the streams do not (see Intake.quiet)."""
        return self.intake.quiet(self.subs, now)

    # -- carrying out the ledger's decisions ----------------------------------------------------

    def apply(self, decisions: Sequence[Decision], values: dict[int, Any] | None = None) -> list[Completion]:
        """Do what the ledger decided; return the futures to complete."""
        completions: list[Completion] = []
        for decision in decisions:
            record = getattr(decision, "record", None)
            if record is not None:
                self._record(decision.call, record)
            if isinstance(decision, Resolve):
                value = (values or {}).get(decision.call) if decision.ok else decision.error
                if not decision.ok and len(decision.attempts) > 1 and sys.version_info >= (3, 11):
                    if value is not None and not isinstance(value, JobError):  # a JobError lists them
                        value.add_note(describe_attempts(decision.attempts))
                future = self.futures.settle(decision.call, decision.ok, value)
                if future is not None:
                    completions.append((future, decision.ok, value))
            elif isinstance(decision, Retry):
                log.warning(
                    "call %d of %s: %s; resubmitting it (attempt %d of at most %d)",
                    decision.call, self.store.name, decision.record, decision.attempt + 1,
                    self.retry.max_retries + 1,
                )  # fmt: skip
            elif isinstance(decision, Withdraw):
                self.store.mark_cancel(decision.call, decision.attempt)  # no element runs it now
            elif isinstance(decision, Cancelled):
                mark_cancelled(self.futures[decision.call])
        return completions

    def _record(self, call: int, record: Any) -> None:
        try:
            self.store.record_attempt(call, record.attempt, record.to_json())
        except OSError as exc:
            log.warning("could not record attempt %s of call %d: %s", record.attempt, call, exc)

    # -- the scheduler's view -------------------------------------------------------------------

    def update(self, statuses: dict[str, ElementStatus], now: float, lost_after: float) -> None:
        """Take in one bulk status report (see :meth:`SubState.take_report`)."""
        self.ledger.element_status(statuses, now, lost_after)

    def failures(self, now: float, grace: float) -> list[Completion]:
        """Calls whose job has been final, with no result, for longer than ``grace``, and
        the results found by one more look at the streams first. Only looked for when an
        element's grace period is over, not on every tick."""
        if not self.ledger.orphans_due(now, grace):
            return []
        # A result written after this tick's scan but before the status report that made
        # its element final must not be taken for a failure: with no grace (the local
        # backend), this look is what makes the absence of a result conclusive.
        try:
            completions = self.scan()
        except OSError as exc:
            log.warning("could not read %s: %s", self.store.path, exc)
            return []  # decide on a later tick
        completions += self.intake.finish_streams(self.subs, now)
        for orphan in self.ledger.orphans(now, grace):
            sub = self.subs[orphan.sub]
            who = orphan.element if orphan.started else None
            error = ended_job_error(self, orphan.call, sub, orphan.index, who)
            decisions = self.ledger.failed(
                orphan.call, orphan.attempt, error, orphan.element, orphan.status, orphan.started
            )
            for decision in decisions:
                if isinstance(decision, Resolve) and len(decision.attempts) > 1:
                    rebuilt = ended_job_error(self, orphan.call, sub, orphan.index, who, decision.attempts)
                    decision = Resolve(decision.call, False, rebuilt, decision.attempts, decision.record)
                completions += self.apply([decision])
        return completions

    def stderr_of(self, call: int) -> str:
        """What the call's current attempt wrote to stderr (for the error of its end)."""
        try:
            return self.output(call, "err")
        except OSError:
            return ""


def scan_all(batches: Sequence[BatchState]) -> list[Completion]:
    """A tick's look at the streams of every live batch: ONE transport operation for all of
    them (:meth:`~corral.transports.base.Transport.scan_many`), so that a tick over SSH is one
    request however many batches are live. A folder that fails the trust check makes each
    batch look alone (that batch's calls fail, the others go on); a read that failed is
    logged and left to the next tick."""
    transports = {id(batch.store.transport) for batch in batches}
    if len(batches) < 2 or len(transports) > 1:
        return [c for batch in batches for c in _scan_one(batch)]
    try:
        found = batches[0].store.transport.scan_many([batch.intake.wanted() for batch in batches])
    except UnsafeWorkDirError:
        return [c for batch in batches for c in _scan_one(batch)]
    except OSError as exc:
        log.warning("could not read %s: %s", ", ".join(batch.store.path for batch in batches), exc)
        return []
    return [c for batch, appended in zip(batches, found, strict=True) for c in _scan_one(batch, appended)]


def _scan_one(batch: BatchState, appended: Mapping[str, bytes] | None = None) -> list[Completion]:
    try:
        return batch.scan(appended)
    except OSError as exc:  # the scan, or an output file read for echo
        log.warning("could not read %s: %s", batch.store.path, exc)
        return []
