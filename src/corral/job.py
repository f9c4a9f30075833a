"""Plain values shared by the engine and the backends: job states and status reports. No I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from signal import Signals
from typing import Any


class JobState(enum.Enum):
    """Where a job (one array element) stands, in scheduler-neutral words."""

    PENDING = "pending"  # queued, not yet started
    RUNNING = "running"  # started on a node
    SUSPENDED = "suspended"  # stopped by the scheduler, will resume
    REQUEUED = "requeued"  # put back in the queue; it will run again
    COMPLETED = "completed"  # the job script exited 0
    FAILED = "failed"  # the job script exited non-zero
    CANCELLED = "cancelled"  # cancelled by a user or an administrator
    TIMEOUT = "timeout"  # killed at its time limit
    OUT_OF_MEMORY = "out_of_memory"  # killed for exceeding its memory
    NODE_FAIL = "node_fail"  # its node died under it
    BOOT_FAIL = "boot_fail"  # its node failed to boot
    PREEMPTED = "preempted"  # stopped for higher-priority work and not requeued
    DEADLINE = "deadline"  # could not run before its deadline
    LOST = "lost"  # gone from the scheduler with no record of how it ended

    @property
    def is_final(self) -> bool:
        """True when the job will never run (again) under this id."""
        return self not in _LIVE


_LIVE = frozenset({JobState.PENDING, JobState.RUNNING, JobState.SUSPENDED, JobState.REQUEUED})


@dataclass(frozen=True)
class ElementStatus:
    """One array element as the scheduler reported it."""

    element_id: str  # "<array job id>_<index>"
    state: JobState
    node: str | None = None
    reason: str = ""
    exit_code: int | None = None  # the job script's exit code, when the scheduler says
    signal: int | None = None  # the signal that ended it, when one did

    @property
    def exit_unknown(self) -> bool:
        """True for an element that failed with no exit code or signal reported (squeue says
        FAILED without either; SLURM's accounting tells them a little later)."""
        return self.state is JobState.FAILED and self.exit_code is None and self.signal is None

    def describe_end(self) -> str:
        """``exit code 3`` or ``killed by signal 9 (SIGKILL)``; empty when neither is known
        (or the exit code was 0)."""
        if self.signal:
            return f"killed by signal {self.signal}{_signal_name(self.signal)}"
        return f"exit code {self.exit_code}" if self.exit_code else ""


def _signal_name(number: int) -> str:
    try:
        return f" ({Signals(number).name})"
    except ValueError:
        return ""


class Condition(enum.Enum):
    """How a job's dependencies must stand for it to run (SLURM's afterok, afterany,
    afternotok, after). Every dependency must meet it; if one cannot, the job is dropped and
    never runs."""

    OK = "ok"  # each dependency completed successfully
    ANY = "any"  # each dependency ended, however
    NOTOK = "notok"  # each dependency ended in failure (failed, cancelled, timed out, ...)
    STARTED = "started"  # each dependency started (or ended without starting: cancelled)

    def settled_by(self, state: JobState) -> bool:
        """True once a dependency in ``state`` no longer holds the job back: it has ended, or
        for STARTED, it has left the queue's pending state (a requeued job started once)."""
        if self is Condition.STARTED:
            return state is not JobState.PENDING
        return state.is_final

    def met_by(self, state: JobState) -> bool:
        """True when a dependency in ``state`` lets the job run (one that has not settled,
        see :meth:`settled_by`, lets nothing run yet)."""
        if not self.settled_by(state):
            return False
        if self in (Condition.ANY, Condition.STARTED):
            return True
        return (state is JobState.COMPLETED) == (self is Condition.OK)


@dataclass(frozen=True)
class Dependency:
    """What a submission waits for: scheduler ids of whole jobs (``"4242"``) or of array
    elements (``"4242_3"``), and the condition each must meet; ``ended`` are more ids that
    must have ended, however (afterany: what a ``corral.join()`` adds)."""

    condition: Condition
    job_ids: tuple[str, ...]
    ended: tuple[str, ...] = ()

    def clauses(self) -> list[tuple[Condition, tuple[str, ...]]]:
        """(condition, ids) pairs, each with ids, that must all be met."""
        pairs = [(self.condition, self.job_ids), (Condition.ANY, self.ended)]
        return [(condition, ids) for condition, ids in pairs if ids]


def element_id(job_id: str, index: int) -> str:
    """The id of array element ``index`` of array job ``job_id``."""
    return f"{job_id}_{index}"


@dataclass(frozen=True)
class Attempt:
    """How one attempt of a call ended without a result (what the error lists)."""

    attempt: int
    job_id: str | None
    state: str  # a JobState name, or the exception type for a retried exception
    node: str | None = None
    reason: str = ""

    def __str__(self) -> str:
        where = f" on {self.node}" if self.node else ""
        why = f": {self.reason}" if self.reason else ""
        return f"attempt {self.attempt + 1}: job {self.job_id or '(never started)'} {self.state}{where}{why}"

    def to_json(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "job_id": self.job_id,
            "state": self.state,
            "node": self.node,
            "reason": self.reason,
        }


def describe_attempts(attempts: list[Attempt] | tuple[Attempt, ...]) -> str:
    """``tried N times:`` and one line per attempt, for error messages."""
    return "tried {} times:\n{}".format(len(attempts), "\n".join(f"  {a}" for a in attempts))
