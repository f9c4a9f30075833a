"""When a call runs again: the resubmission decision, as pure functions and plain values.

A call is resubmitted (only that call, as a new attempt in a new small array) when its job
ended for a reason that is not the call's fault:

* NODE_FAIL, BOOT_FAIL, PREEMPTED, LOST, or a job that ended COMPLETED without the call's
  outcome (see :data:`INFRASTRUCTURE`); TIMEOUT too when the call had not started;
* TIMEOUT and OUT_OF_MEMORY only when the user opted in with ``time_factor`` or
  ``memory_factor``, and then with that much more time or memory;
* the call's own exception only when its type is in ``retry_on``.

Every attempt counts, whatever its reason: a call runs at most ``max_retries + 1`` times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import timedelta

from .errors import CorralError, JobError
from .job import JobState
from .resources import MAX_MEMORY_MB, MAX_TIME, Resources

#: Job states that say nothing about the call itself: its attempt is simply run again.
INFRASTRUCTURE = frozenset(
    {JobState.NODE_FAIL, JobState.BOOT_FAIL, JobState.PREEMPTED, JobState.LOST, JobState.COMPLETED}
)


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures are run again, how often, and with what.

    ``max_retries``: attempts after the first (0: never resubmit).
    ``retry_on``: exception types of the call itself that are worth another attempt.
    ``time_factor``: resubmit a call that hit its time limit with this many times the time.
    ``memory_factor``: likewise for a call that ran out of memory.
    """

    max_retries: int = 3
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = ()
    time_factor: float | None = None
    memory_factor: float | None = None

    def __post_init__(self) -> None:
        if (
            not isinstance(self.max_retries, int)
            or isinstance(self.max_retries, bool)
            or self.max_retries < 0
        ):
            raise CorralError(f"max_retries={self.max_retries!r} must be a whole number >= 0")
        retry_on = self.retry_on if isinstance(self.retry_on, tuple) else (self.retry_on,)
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in retry_on):
            raise CorralError(f"retry_on={self.retry_on!r} must be exception types")
        for name in ("time_factor", "memory_factor"):
            factor = getattr(self, name)
            if factor is not None and not (isinstance(factor, int | float) and factor > 1):
                raise CorralError(f"{name}={factor!r} must be a number above 1 (e.g. 2.0 to double)")

    def next_resources(
        self, error: BaseException, attempts_made: int, resources: Resources, *, started: bool = True
    ) -> Resources | None:
        """The resources of the next attempt after ``error`` ended attempt number
        ``attempts_made - 1``, or None when the call must fail with ``error``. A call that
        never ``started`` (its element ran out of time on earlier calls) runs again as is."""
        if attempts_made > self.max_retries:
            return None
        state = error.state if isinstance(error, JobError) else None
        if state in INFRASTRUCTURE or (not started and state is JobState.TIMEOUT):
            return resources
        if state is JobState.TIMEOUT and self.time_factor and resources.time:
            seconds = math.ceil(resources.time.total_seconds() * self.time_factor)
            # at most the bound Resources accepts (a ResourceError here would end the poll loop)
            return replace(resources, time=min(timedelta(seconds=seconds), MAX_TIME))
        if state is JobState.OUT_OF_MEMORY and self.memory_factor and resources.memory:
            memory = math.ceil(resources.memory * self.memory_factor)
            return replace(resources, memory=min(memory, MAX_MEMORY_MB))
        return resources if isinstance(error, self.retry_on) else None
