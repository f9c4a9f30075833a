"""How often the engine looks at the work dir and the scheduler, and how it paces arrays."""

from __future__ import annotations

import os
from dataclasses import dataclass


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class PollPolicy:
    """How often the engine looks, in seconds."""

    files_min: float = 0.02  # work-dir listing interval while calls start and finish
    files_max: float = 0.5  # (a listing is one readdir per folder: cheap even on NFS)
    files_growth: float = 1.25
    files_fast_for: float = 2.0  # keep the shortest interval this long after any activity
    # Widen a probing array when the work left, at the first element's pace, would take
    # longer than this: well above the ~0.75 s it takes to launch the other elements, since
    # the pace of a just-started element is underestimated.
    widen_after: float = 2.0
    probe_for: float = 0.2  # watch the first element this long before judging its pace
    scheduler_min: float = 1.0  # bulk status query interval, growing while nothing changes
    scheduler_max: float = 15.0
    # While every started element's stream shows it alive (a record within 3 heartbeats, see
    # corral.store.protocol.BEAT) and none has ended unconfirmed, the scheduler has nothing
    # to tell: it is asked this rarely, a safety net for what no stream shows (an element
    # cancelled while it waited in the queue). None: six times scheduler_max (90 s by
    # default), so that a policy tuned for quick answers stays quick.
    scheduler_quiet: float | None = None

    @property
    def quiet_interval(self) -> float:
        """Seconds between status queries while the streams tell all (see scheduler_quiet)."""
        return self.scheduler_quiet if self.scheduler_quiet is not None else 6 * self.scheduler_max

    growth: float = 1.5
    jitter: float = 0.15  # +-15 %, so that many clients do not query in step
    backoff_max: float = 60.0  # after failed queries
    outcome_grace: float = 10.0  # a final job's outcome may appear this late (slow filesystems)
    lost_after: float = 120.0  # a job unknown to the scheduler this long is LOST

    @classmethod
    def from_env(cls) -> PollPolicy:
        """Defaults, with ``CORRAL_OUTCOME_GRACE`` and ``CORRAL_POLL_MAX`` applied."""
        return cls(
            outcome_grace=_env_float("CORRAL_OUTCOME_GRACE", cls.outcome_grace),
            scheduler_max=_env_float("CORRAL_POLL_MAX", cls.scheduler_max),
        )


class PollTimer:
    """When the poll loop next reads the streams and asks the scheduler, under a
    :class:`PollPolicy`: the loop tells it what each tick saw, it says how long to wait.

    Status queries start every ``scheduler_min`` seconds and grow by ``growth`` up to
    ``scheduler_max`` while nothing changes, back to ``scheduler_min`` when something does;
    while the streams tell all (``quiet``) they come every ``quiet_interval``; failed ones back
    off exponentially up to ``backoff_max``. Stream reads come every ``files_min`` seconds for
    ``files_fast_for`` seconds after any activity, then grow by ``files_growth`` up to
    ``files_max``, and never more often than twice a read's own cost."""

    def __init__(self, policy: PollPolicy, now: float) -> None:
        self.policy = policy
        self.files_wait = policy.files_min
        self.sched_wait = policy.scheduler_min
        self.failures = 0  # status queries failed in a row
        self.next_query = now + self.sched_wait
        self.last_activity = 0.0  # when a batch was submitted or a call started or ended

    def due(self, now: float) -> bool:
        """True when the scheduler is to be asked on this tick."""
        return now >= self.next_query

    def failed(self) -> float:
        """A status query failed; return the seconds until the next one."""
        self.failures += 1
        policy = self.policy
        self.sched_wait = min(policy.scheduler_min * 2**self.failures, policy.backoff_max)
        return self.sched_wait

    def answered(self, *, changed: bool, holding: bool, quiet: bool) -> None:
        """A status query was answered: ``changed`` when an element changed state,
        ``holding`` while the engine holds submissions back, ``quiet`` when the streams
        told all already."""
        policy = self.policy
        self.failures = 0
        grown = min(self.sched_wait * policy.growth, policy.scheduler_max)
        self.sched_wait = policy.scheduler_min if changed or holding else grown
        if quiet and not changed and not holding:
            self.sched_wait = policy.quiet_interval  # the streams tell all: no need to ramp

    def schedule(self, now: float, *, asked: bool, quiet: bool, jitter: float) -> None:
        """After a tick: the next query ``sched_wait`` (times ``jitter``, near 1) after one
        asked now; or soon, when the streams stopped telling all while it was far away."""
        if asked:
            self.next_query = now + self.sched_wait * jitter
        elif not quiet and self.next_query - now > self.policy.scheduler_max:
            # An element ended, or went silent: ask the scheduler soon, not in a minute.
            self.sched_wait = self.policy.scheduler_min
            self.next_query = now + self.sched_wait

    def active(self, now: float) -> None:
        """A batch was submitted, or a call started or ended."""
        self.last_activity = now

    def wait(self, now: float, scan_cost: float) -> float:
        """Seconds until the next tick, after one whose stream read took ``scan_cost``."""
        policy = self.policy
        if now - self.last_activity < policy.files_fast_for:
            self.files_wait = policy.files_min
        else:
            self.files_wait = min(self.files_wait * policy.files_growth, policy.files_max)
        # Huge batches: reading the streams stays under a third of a core.
        self.files_wait = max(self.files_wait, 2 * scan_cost)
        return max(0.0, min(self.files_wait, self.next_query - now))
