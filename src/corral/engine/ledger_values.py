"""The values the ledger (:mod:`corral.engine.ledger`) speaks in: a call's phase, and the
decisions it hands the engine. Plain frozen values, no I/O.

One call moves through these phases (its *current attempt* counts from 0)::

    WAITING --taken--> TAKEN --finished ok--------------------------> DONE
       ^                 |  \\--finished failed / orphaned, final----> FAILED
       |                 |
       +--- Retry -------+   (a failure the retry policy forgives: next attempt)
    WAITING --cancel / skipped----------------------------------------> CANCELLED

=========  ==================================================  ==============
phase      meaning                                             the user sees
=========  ==================================================  ==============
WAITING    no element has taken the current attempt yet        PENDING
TAKEN      an element took it (several, over requeues)         RUNNING
DONE       a result was read                                   COMPLETED
FAILED     failed for good (the error's state when it has one) FAILED / error
CANCELLED  the client took the attempt before any element      CANCELLED
=========  ==================================================  ==============
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..job import Attempt, ElementStatus, JobState
from ..resources import Resources


class Phase(enum.IntEnum):
    """Where a call's current attempt stands (stored as one byte per call)."""

    WAITING = 0  # no element has taken the current attempt
    TAKEN = 1  # an element took it: running, for the user
    DONE = 2  # its result was read
    FAILED = 3  # failed for good
    CANCELLED = 4  # the client took it before any element did

    @property
    def is_final(self) -> bool:
        """True once the call's future is settled."""
        return self >= Phase.DONE


#: What a call's future shows for each phase (FAILED: the error's own state, when it has one).
STATE_OF_PHASE: dict[Phase, JobState] = {
    Phase.WAITING: JobState.PENDING,
    Phase.TAKEN: JobState.RUNNING,
    Phase.DONE: JobState.COMPLETED,
    Phase.FAILED: JobState.FAILED,
    Phase.CANCELLED: JobState.CANCELLED,
}


@dataclass(frozen=True)
class Resolve:
    """Settle the call's future: with its result (``ok``; the engine holds the value) or
    with ``error``. ``attempts`` lists every failed attempt, in order; ``record`` is the one
    this decision added (the engine writes it to the work dir), if any."""

    call: int
    ok: bool
    error: BaseException | None = None
    attempts: tuple[Attempt, ...] = ()
    record: Attempt | None = None


@dataclass(frozen=True)
class Retry:
    """Run ``attempt`` of the call in a new submission asking for ``resources``; ``record``
    is the failed attempt before it (the engine writes it to the work dir)."""

    call: int
    attempt: int
    resources: Resources
    record: Attempt


@dataclass(frozen=True)
class Withdraw:
    """An earlier attempt succeeded after all: take ``attempt`` of the call (a client claim)
    so that no element runs it."""

    call: int
    attempt: int


@dataclass(frozen=True)
class Cancelled:
    """The call was cancelled before any element took it: mark its future cancelled."""

    call: int


Decision = Resolve | Retry | Withdraw | Cancelled


@dataclass(frozen=True)
class Orphan:
    """A call whose element ended more than the grace period ago without its result: the
    engine builds its error (it reads the stderr) and hands it to :meth:`~corral.engine.ledger.Ledger.failed`.
    ``sub`` and ``index`` say which element of which submission; ``started`` is False for a
    call no element ever took."""

    call: int
    attempt: int
    element: str
    status: ElementStatus
    started: bool
    sub: int
    index: int


@dataclass(frozen=True)
class Counts:
    """Calls by phase, for progress displays; ``retried`` counts attempts run again."""

    pending: int
    running: int
    done: int
    failed: int
    cancelled: int
    retried: int
