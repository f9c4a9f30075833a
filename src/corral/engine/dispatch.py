"""Getting a batch's submissions to the scheduler: now, later, or never.

Now when nothing holds them back. Later when MaxSubmitJobs leaves no room, when the
executor's limit leaves no room (see :mod:`corral.engine.throttle`), when the batch runs after
another that is not done or after calls whose jobs have no id yet (see
:mod:`corral.engine.dependencies`), and while the scheduler is out of reach. Never
when the scheduler refuses them or their dependency can never be met: then their calls fail
with the reason. Resubmitted calls become new small arrays here too. Everything here runs
under the cluster's lock, called by :class:`~corral.engine.cluster.Cluster`.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import replace

from ..backends.base import Backend
from ..errors import DependencyError, SchedulerError
from ..job import ElementStatus, JobState
from ..resources import Resources
from ..store.protocol import Mode
from .cancelling import cancel_one, take_unclaimed
from .dependencies import resolve as resolve_needs
from .policy import PollPolicy
from .submitting import array_specs, log_pattern, retry_plans
from .throttle import Throttle, settle
from .tracking import BatchState, Completion, SubState

log = logging.getLogger(__name__)


class Dispatcher:
    """Submits the submissions of batches as the scheduler's limits and state allow."""

    def __init__(self, backend: Backend, policy: PollPolicy, live_elements: Callable[[], int]) -> None:
        self.backend = backend
        self.policy = policy
        self._live_elements = live_elements  # elements of ours queued or running, all batches
        self._others_queued: int | None = None  # the user's other jobs, measured once
        self._submit_after = 0.0  # after a transient submission failure, wait till then
        # The limit each batch shares with the other batches of its executor or pool; weak,
        # so that the engine keeps no batch (nor its results) the user has let go of.
        self._throttles: weakref.WeakKeyDictionary[BatchState, Throttle] = weakref.WeakKeyDictionary()
        #: Submissions of done batches whose elements still count against a limit.
        self.settling: list[SubState] = []

    def limit(self, batch: BatchState, throttle: Throttle) -> None:
        """Submit ``batch`` within ``throttle``, the limit of its executor or pool."""
        self._throttles[batch] = throttle

    def settle_later(self, batch: BatchState) -> None:
        """``batch`` is done and the engine lets it go (and its results with it); elements of
        it that the scheduler has not yet reported final still count against its executor's
        limit, so they are watched until they are (see :attr:`settling`)."""
        if self._throttles.pop(batch, None) is not None:
            self.settling += [s for s in batch.subs if s.submitted and not s.all_final]

    def settling_job_ids(self) -> list[str]:
        """The jobs of the submissions that are :attr:`settling`, for the next status query."""
        return [s.job_id for s in self.settling if s.job_id is not None]

    def settle(self, statuses: dict[str, ElementStatus], now: float) -> None:
        """Take in a status report for the submissions still :attr:`settling`."""
        self.settling = [s for s in self.settling if not settle(s, statuses, now)]

    def holding_back(self) -> bool:
        """True while a submission waits for room under an executor's limit: the engine then
        asks the scheduler more often, to learn soon when an element has ended."""
        return any(t.waiting() for t in set(self._throttles.values()))

    def ready(self, batch: BatchState) -> list[Completion]:
        """Submit the batch's submissions that MaxSubmitJobs leaves room for; defer the rest.
        A batch waiting for calls whose jobs have no id yet waits; one whose dependency can
        never be met is not submitted, and its calls fail."""
        dependency = None
        if batch.needs is not None:
            settled = resolve_needs(batch.needs)
            if settled.unmet:
                return self._unmet(batch, settled.unmet)
            if not settled.ready:
                return []
            dependency = settled.dependency
        for sub in batch.subs:
            if sub.submitted or sub.dropped:
                continue
            throttle = self._throttles.get(batch)
            if throttle is not None and not self._fit(batch, sub, throttle):
                return []
            if not self._room_for(sub.spec.resources, sub.plan.elements):
                log.info(
                    "deferring submission %d of %s: MaxSubmitJobs reached", sub.plan.sub, batch.store.name
                )
                return []
            if dependency != sub.spec.dependency:  # known only now: write it into the script
                sub.spec = replace(sub.spec, dependency=dependency)
                batch.save_submission(sub.plan, sub.spec, self.backend.render(sub.spec))
            job_id = self.backend.submit(sub.spec, sub.script_path, log_pattern(batch.store))
            batch.ledger.submitted(sub.plan.sub, job_id, time.monotonic())
            batch.store.record_job_id(sub.plan.sub, job_id)
            if throttle is not None:
                throttle.submitted(sub)
            log.debug("submitted %s (%d elements) for %s", job_id, sub.plan.elements, batch.store.name)
        return []

    def _fit(self, batch: BatchState, sub: SubState, throttle: Throttle) -> bool:
        """True when ``sub`` may go now under its executor's limit; a lone pull array that
        finds only some room is first shrunk to it (its elements share the calls)."""
        room = throttle.room(batch, sub)
        if room == 0:
            log.debug(
                "holding back submission %d of %s: its executor's limit is reached",
                sub.plan.sub,
                batch.store.name,
            )
            return False
        plan = sub.plan
        if (
            room < plan.elements
            and plan.mode is Mode.PULL
            and plan.first_element == 0
            and plan.total_elements == plan.elements
        ):
            sub.plan = replace(plan, elements=room, total_elements=room)
            sub.spec = replace(sub.spec, elements=room)
            batch.save_submission(sub.plan, sub.spec, self.backend.render(sub.spec))
        elif room < plan.elements:
            return False  # a static array or part of a split batch: whole, or later
        return True

    def _unmet(self, batch: BatchState, why: str) -> list[Completion]:
        """A batch whose dependency can never be met is never submitted: its calls fail."""
        log.warning("not submitting %s: %s", batch.store.name, why)
        for sub in batch.subs:
            sub.dropped = sub.dropped or not sub.submitted
        failed: list[Completion] = []

        def never(call: int) -> BaseException:
            return DependencyError(
                state=JobState.CANCELLED, job_id=None, call=call, batch=batch.store.name,
                reason=f"never submitted: {why}", work_dir=batch.store.path,
            )  # fmt: skip

        for call in take_unclaimed(batch, never):
            failed.append((batch.futures[call], False, batch.ledger.error(call)))
        return failed

    def _room_for(self, resources: Resources, elements: int) -> bool:
        limit = self.backend.limits(resources).max_submit_jobs
        if limit is None:
            return True
        if self._others_queued is None:
            self._others_queued = max(0, self.backend.queued_jobs() - self._live_elements())
        return self._others_queued + self._live_elements() + elements <= limit

    def resubmit(self, batch: BatchState) -> list[Completion]:
        """Turn the batch's calls waiting for another attempt into new (unsubmitted) arrays,
        which ``deferred`` then submits."""
        waiting = batch.ledger.retries()
        if not waiting:
            return []
        try:
            plans = retry_plans(len(batch.subs), waiting, self.backend.limits, batch.max_running)
        except SchedulerError as exc:  # the limits could not be read: try again next tick
            batch.ledger.put_back(waiting)
            log.warning("cannot plan the resubmission for %s yet: %s", batch.store.name, exc)
            return []
        completions: list[Completion] = []
        for plan, resources in plans:
            first = batch.subs[0].spec  # how the first attempts ran: where, with what
            spec = array_specs(
                [plan], batch.store.path, batch.name, resources, batch.max_running, first.command,
                first.chdir, python=first.python, environment=first.environment,
            )[0]  # fmt: skip
            try:
                path = batch.save_submission(plan, spec, self.backend.render(spec))
            except OSError as exc:
                batch.add_sub(SubState(plan, spec, "", dropped=True))
                return completions + self._refuse(batch, batch.subs[-1], exc)
            completions += batch.add_sub(SubState(plan, spec, path))
        return completions

    def deferred(self, batch: BatchState, now: float) -> list[Completion]:
        """Submit what MaxSubmitJobs held back and the arrays of resubmitted calls. While the
        scheduler is out of reach they wait; a refused one fails its own calls only."""
        waiting = [s for s in batch.subs if not (s.submitted or s.dropped)]
        if not waiting or now < self._submit_after:
            return []
        if not batch.unclaimed_count():  # cancelled meanwhile: nothing left to submit for
            for sub in waiting:
                sub.dropped = True
            return []
        try:
            return self.ready(batch)
        except SchedulerError as exc:
            sub = next(s for s in batch.subs if not (s.submitted or s.dropped))
            if exc.transient:
                self._submit_after = now + self.policy.scheduler_max
                log.warning("cannot submit %s yet, trying again later: %s", batch.store.name, exc)
                return []
            return self._refuse(batch, sub, exc)
        return []

    def _refuse(self, batch: BatchState, sub: SubState, error: Exception) -> list[Completion]:
        """A submission that cannot be made fails the calls it was for, with the reason."""
        log.error("submission %d of %s failed: %s", sub.plan.sub, batch.store.name, error)
        sub.dropped = True
        failed: list[Completion] = []
        for call in batch.unclaimed():
            if sub.covers(batch.task(call)) and cancel_one(batch, call, error):
                failed.append((batch.futures[call], False, error))
        return failed
