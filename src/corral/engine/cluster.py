"""The engine: turns many calls into few array submissions, watches them with one poll loop,
and completes futures.

One :class:`Cluster` per backend. Its poll loop runs in one thread for all batches:

* every tick it lists the ``claims/`` and ``results/`` folders of each live batch (no scheduler
  command) and completes the futures of calls whose outcome appeared; the tick shortens while
  outcomes keep coming and lengthens when nothing happens;
* every scheduler interval it sends ONE bulk status query for all live jobs (the backend uses
  squeue, and sacct for jobs that left the queue), whatever their number; the interval grows
  while nothing changes, with jitter, and backs off when the scheduler does not answer;
* a call whose job is final without an outcome fails after a grace period with the typed error
  of the job's state; deferred submissions go out when MaxSubmitJobs leaves room.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..backends.base import Backend, Submission
from ..environment import NO_ENVIRONMENT, Environment
from ..errors import CorralError, JobCancelledError, SchedulerError, SubmissionError
from ..job import Condition, ElementStatus, JobState
from ..resources import Resources
from ..store.batch import default_root
from .building import build_batch, preview_submission
from .cancelling import cancel_one, take_unclaimed
from .coalesce import Coalescer, Pending
from .dispatch import Dispatcher
from .echo import Outbox
from .futures import CorralFuture, complete, mark_cancelled
from .pacing import release_idle, widen
from .planning import plan_batch
from .policy import PollPolicy, PollTimer
from .request import Request
from .submitting import Call, guard_nested, local_modules_by_value
from .tracking import BatchState, Completion, scan_all

log = logging.getLogger(__name__)


class Cluster:
    """Submits batches of calls to one backend and watches them."""

    def __init__(
        self,
        backend: Backend,
        directory: str | None = None,
        *,
        policy: PollPolicy | None = None,
        python: str | None = None,
        chdir: str | None = None,
    ) -> None:
        self.backend = backend
        self.root = os.path.abspath(directory) if directory else default_root()
        #: The interpreter of the jobs unless a request's environment names one: this
        #: process's, or a remote host's.
        self.python = python or sys.executable
        #: Where the jobs run: the requests' own working directory (the client's, when it
        #: was made), unless set (a remote host: the client's folders are not there, and
        #: neither are the modules beside the user's script, which are then sent by value).
        self.chdir = chdir
        self.policy = policy or PollPolicy.from_env()
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._batches: list[BatchState] = []
        self._thread: threading.Thread | None = None
        self._pacing = PollTimer(self.policy, time.monotonic())
        self._dispatch = Dispatcher(backend, self.policy, self._live_elements)
        self._coalescer = Coalescer(self._kick)
        self._outbox = Outbox()  # echo's lines, handed over outside the lock

    # -- submitting -----------------------------------------------------------------------------

    def submit(self, request: Request, futures: list[CorralFuture] | None = None) -> BatchState:
        """Write the request's calls to a new batch folder and submit them as array jobs: the
        engine's one door (see :mod:`corral.engine.request`). Everything that can fail before
        the scheduler sees the batch (the budget, pickling, limits) fails here, and a refused
        submission cancels the parts already submitted. A batch with a ``throttle`` keeps, with
        the other batches sharing it, to the limit of its executor or pool (see
        :mod:`corral.engine.throttle`); one with ``needs`` is submitted with the scheduler's
        dependency on those calls' jobs (see :mod:`corral.engine.dependencies`). ``futures``
        are the pending futures of a burst of submits (see :mod:`corral.engine.coalesce`),
        which the batch takes as its own."""
        guard_nested(request.allow_nested)
        needs = request.needs
        if needs is not None and needs.condition not in self.backend.conditions:
            raise SubmissionError(
                f"the {self.backend.name} backend cannot wait for jobs with "
                f"condition={needs.condition.value!r}; it can with: "
                + ", ".join(repr(c.value) for c in Condition if c in self.backend.conditions)
            )
        with local_modules_by_value(self.chdir is not None):  # a remote host's nodes lack them
            request = dataclasses.replace(request, echo=self._outbox.holding(request.echo))
            batch = build_batch(request, self.backend, self.root, self, futures, self.python, self.chdir)
        with self._lock:
            self._batches.append(batch)  # counted in MaxSubmitJobs from its first submission
            self._pacing.active(time.monotonic())
            if request.throttle is not None:
                self._dispatch.limit(batch, request.throttle)
            try:
                completions = self._dispatch.ready(batch)
            except BaseException:
                self._batches.remove(batch)
                self._cancel_jobs(batch.live_job_ids())
                raise
            if self.backend.synchronous:
                completions += self._scan(batch)
            self._ensure_loop()
        self._complete(completions)
        return batch

    def adopt(
        self, batch: BatchState, settle: Callable[[BatchState], list[Completion]] | None = None
    ) -> BatchState:
        """Watch a batch rebuilt from its folder (see :mod:`corral.frontends.attach`): its outcomes are
        read now, then ``settle`` decides what the first look leaves open."""
        with self._lock:
            completions = self._scan(batch)
            completions += settle(batch) if settle else []
            self._batches.append(batch)
            self._pacing.active(time.monotonic())
            self._ensure_loop()
        self._complete(completions)
        return batch

    def preview(
        self,
        resources: Resources,
        *,
        calls: int = 1,
        chunksize: int | None = None,
        max_running: int | None = None,
        environment: Environment = NO_ENVIRONMENT,
    ) -> Submission:
        """The script and command the first submission of such a batch would use; the batch
        folder shows as ``<batch>`` and the function's name as ``FUNCTION``."""
        plans = plan_batch(
            calls, self.backend.limits(resources), chunksize=chunksize, max_running=max_running
        )
        where = os.path.join(self.root, "<batch>"), self.python, self.chdir
        return preview_submission(self.backend, plans, where, resources, max_running, environment)

    def _live_elements(self) -> int:
        return sum(s.live_elements for b in self._batches for s in b.subs)

    # -- cancelling -----------------------------------------------------------------------------

    def cancel_call(self, batch: BatchState, call: int) -> bool:
        """Cancel one call that has not started; drop pending elements nobody needs."""
        with self._lock:
            if not cancel_one(batch, call):
                return False
            completions = self._scan(batch)  # a fresh view: are any calls left unclaimed?
            release_idle(self.backend, batch)
        self._complete(completions)
        return True

    def cancel_unclaimed(self, batch: BatchState) -> None:
        """Cancel every call of ``batch`` that no element has taken (a map its caller left
        early): one claim per untaken range, not one mark per call; running calls run on."""
        with self._lock:
            calls = take_unclaimed(batch)
            release_idle(self.backend, batch)
        for call in calls:
            future = batch.futures.made(call)  # one made later starts cancelled
            if future is not None:
                mark_cancelled(future)

    def cancel_job_of(self, batch: BatchState, call: int) -> bool:
        """Cancel the array element that runs ``call`` (static plans): the call, if it has
        not started, is cancelled; if it has, it and any call bundled with it in that element
        fail with JobCancelledError. False when the call had already finished."""
        with self._lock:
            future = batch.futures[call]
            if future.done():
                return False
            sub, index = batch.sub_of(call)
            not_started = cancel_one(batch, call)
            if sub is not None and sub.job_id is not None and index is not None:
                self._cancel_jobs([sub.element(index)])
        if not_started:
            mark_cancelled(future)
        return True

    def cancel_batches(self, batches: Iterable[BatchState]) -> None:
        """Cancel everything of these batches: calls not started are cancelled, running jobs
        are cancelled in the scheduler and their calls fail with JobCancelledError."""
        running: list[Completion] = []
        with self._lock:
            for batch in batches:
                if batch.done:
                    continue
                for call in take_unclaimed(batch):
                    mark_cancelled(batch.futures[call])
                self._cancel_jobs(batch.live_job_ids())
                for call in range(len(batch.futures)):
                    if not batch.is_resolved(call):
                        error = JobCancelledError(
                            state=JobState.CANCELLED, job_id=batch.job_id_of(call), call=call,
                            batch=batch.store.name, reason="cancelled by the executor",
                        )  # fmt: skip
                        if batch.ledger.abandon(call, error) is not None:
                            running.append((batch.futures[call], False, error))
                self._batches = [b for b in self._batches if b is not batch]
                self._dispatch.settle_later(batch)
        self._complete(running)

    def release(self, job_ids: list[str]) -> None:
        """The jobs of batches that ended and whose folders go (see corral.frontends.retention):
        what is left of them (elements with no call left, exiting, or never started) is
        cancelled, so that none writes into the folder once it is gone."""
        if job_ids:
            self._cancel_jobs(job_ids)

    def _cancel_jobs(self, job_ids: list[str]) -> None:
        """Cancel jobs on the way out of an error: a failure here must not hide that error."""
        try:
            self.backend.cancel(job_ids)
        except SchedulerError as exc:
            log.error("could not cancel jobs %s: %s", ", ".join(job_ids), exc)

    # -- the poll loop --------------------------------------------------------------------------

    def gather(
        self,
        key: Any,
        template: Request,
        call: Call,
        submitted: Callable[[BatchState], None],
        *,
        explicit: bool = False,
    ) -> CorralFuture:
        """Add a call submitted on its own to a pending batch (see :mod:`corral.engine.coalesce`):
        the open one for ``key`` (a tuple whose first item is the front-end), else a new one
        for ``template`` (a request without calls); return the call's future. ``submitted``
        is called with the batch once it is submitted."""

        def make() -> Pending:
            # The work dir is checked now, so that one that cannot be used (not the user's
            # alone, read-only) fails at the submit line, as for a map, before any call waits.
            self.backend.transport.makedirs(self.root)
            return Pending(template, self.submit, submitted, explicit=explicit)

        with local_modules_by_value(self.chdir is not None):  # the call is pickled as it joins
            return self._coalescer.add(key, make, call)

    def flush(self, owner: Any = None) -> None:
        """Submit now the pending batches of the front-end ``owner`` (of all, when None)."""
        self._coalescer.flush_all(owner)

    def end_gathering(self, key: Any, *, submit: bool = True) -> None:
        """Submit the pending batch of ``key`` now (an explicit block ended), or cancel its
        calls (the block raised)."""
        pending = self._coalescer.detach(key)
        if pending is not None:
            pending.flush() if submit else pending.discard()

    def discard(self, owner: Any) -> None:
        """Cancel the pending calls of the front-end ``owner`` (see :meth:`gather`)."""
        self._coalescer.discard_all(owner)

    def _kick(self) -> None:
        """A pending batch appeared: the poll loop must run, and watch its pause."""
        with self._wake:
            self._ensure_loop()
            self._wake.notify()

    def _ensure_loop(self) -> None:
        live = bool(self._coalescer) or any(not b.done for b in self._batches)
        if self._thread is None and live:
            self._thread = threading.Thread(target=self._loop, name="corral-poll", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        """The poll thread. Should it ever fail, every live call fails with the reason rather
        than waiting forever."""
        try:
            self._watch()
        except BaseException as exc:
            log.exception("corral's poll loop failed")
            with self._lock:
                batches, self._batches, self._thread = self._batches, [], None
            error = CorralError(f"corral's poll loop failed, so this call's outcome is unknown: {exc!r}")
            self._complete([(f, False, error) for b in batches for f in b.futures if not f.done()])
            raise

    def _watch(self) -> None:
        last = self._pacing.last_activity  # a submission's, before the loop began
        pacing = self._pacing = PollTimer(self.policy, time.monotonic())
        pacing.active(last)
        while True:
            self._coalescer.flush_due(time.monotonic())  # bursts of submits that paused
            with self._lock:
                self._let_go()
                if not self._batches and not self._dispatch.settling and not self._coalescer:
                    self._thread = None
                    return
                claims = sum(b.ledger.started for b in self._batches)
                scan_started = time.monotonic()
                completions = scan_all(self._batches)  # one transport operation for all of them
                scan_cost = time.monotonic() - scan_started
                quiet = all(b.quiet(scan_started) for b in self._batches)
                # A call that just started will finish soon: look again quickly.
                progressed = bool(completions) or claims != sum(b.ledger.started for b in self._batches)
                # The local backend's status query reads memory: ask on every tick, so that
                # an element that ended (or frees a place under an executor's limit) is seen.
                holding = self._dispatch.holding_back()
                due = pacing.due(time.monotonic()) or not self.backend.detached
                job_ids = [j for b in self._batches for j in b.live_job_ids()] if due else []
                job_ids += self._dispatch.settling_job_ids() if due else []
            if due:  # the scheduler is asked without the lock: submit and cancel never wait on it
                try:
                    statuses = self.backend.poll(job_ids) if job_ids else {}
                except SchedulerError as exc:
                    statuses = None
                    wait = pacing.failed()
                    log.warning(
                        "status query failed (%d in a row), next in %.0f s: %s", pacing.failures, wait, exc
                    )
            with self._lock:
                now = time.monotonic()
                if due and statuses is not None:
                    changed = self._apply(statuses, now)
                    self._dispatch.settle(statuses, now)
                    pacing.answered(changed=changed, holding=holding, quiet=quiet)
                jitter = random.uniform(1 - self.policy.jitter, 1 + self.policy.jitter)
                pacing.schedule(now, asked=due, quiet=quiet, jitter=jitter)
                completions += self._tend(now, reachable=not pacing.failures)
            self._complete(completions)
            completions.clear()  # the values are the futures' now: keep none of them while waiting
            if progressed:
                pacing.active(time.monotonic())
            with self._wake:
                wait = pacing.wait(time.monotonic(), scan_cost)
                flush_at = self._coalescer.next_due()
                if flush_at is not None:
                    wait = min(wait, flush_at - time.monotonic())
                self._wake.wait(max(0.0, wait))

    def _let_go(self) -> None:
        """Stop watching the batches that are done (see Dispatcher.settle_later)."""
        for batch in self._batches:
            if batch.done:
                self._dispatch.settle_later(batch)
                batch.store.sweep_temporaries()  # what writers killed mid-write left behind
        self._batches = [b for b in self._batches if not b.done]

    def _tend(self, now: float, reachable: bool) -> list[Completion]:
        """One tick's decisions for each live batch: failures, resubmissions, widening,
        idle elements and deferred submissions (scheduler commands only when ``reachable``).
        A method of its own, so that the loop holds no batch while it waits."""
        completions: list[Completion] = []
        grace = self.backend.outcome_grace
        for batch in list(self._batches):
            completions += batch.failures(now, self.policy.outcome_grace if grace is None else grace)
            completions += self._dispatch.resubmit(batch)
            if not reachable:  # the scheduler is out of reach: no commands under the lock
                continue
            widen(self.backend, self.policy, batch, now)
            release_idle(self.backend, batch)
            completions += self._dispatch.deferred(batch, now)
        return completions

    def _scan(self, batch: BatchState) -> list[Completion]:
        return scan_all([batch])

    def _apply(self, statuses: dict[str, ElementStatus], now: float) -> bool:
        """Take in one bulk status report; True when any element changed state."""
        before = [dict(s.status) for b in self._batches for s in b.subs]
        for batch in self._batches:
            batch.update(statuses, now, self.policy.lost_after)
        return before != [s.status for b in self._batches for s in b.subs]

    def _complete(self, completions: list[Completion]) -> None:
        self._outbox.hand_over()  # the lines the calls printed, before their futures complete
        complete(completions)

    def close(self) -> None:
        """Cancel all live work and release the backend."""
        with self._lock:
            batches = list(self._batches)
        self.cancel_batches(batches)
        self.backend.close()
