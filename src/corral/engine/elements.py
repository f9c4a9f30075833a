"""What the engine knows of one submission of a batch: its array's elements as the
scheduler last reported them, and how a bulk status report updates that view."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..backends.base import ArraySpec
from ..job import ElementStatus, JobState, element_id
from .planning import Plan


@dataclass
class SubState:
    """One submission of a batch and the scheduler's view of its elements."""

    plan: Plan
    spec: ArraySpec
    script_path: str
    job_id: str | None = None
    submitted_at: float = 0.0
    status: dict[int, ElementStatus] = field(default_factory=dict)
    final_at: dict[int, float] = field(default_factory=dict)  # when we first saw it final
    missing: dict[int, int] = field(default_factory=dict)  # reports in a row without it
    last_seen: float = 0.0
    pending_cancelled: bool = False
    dropped: bool = False  # deferred, then not needed any more (every call was cancelled)
    probing: bool = False  # submitted throttled to one element, not yet widened

    @property
    def submitted(self) -> bool:
        return self.job_id is not None

    @property
    def all_final(self) -> bool:
        return self.dropped or (self.submitted and len(self.final_at) == self.plan.elements)

    @property
    def live_elements(self) -> int:
        return self.plan.elements - len(self.final_at) if self.submitted else 0

    def element(self, index: int) -> str:
        assert self.job_id is not None
        return element_id(self.job_id, index)

    def covers(self, task: tuple[int, int]) -> bool:
        return self.plan.covers(*task)

    @property
    def exit_unknown(self) -> bool:
        """True when an element failed with no exit code or signal reported yet."""
        return any(s.exit_unknown for s in self.status.values())

    def take_report(self, statuses: dict[str, ElementStatus], now: float, lost_after: float) -> int:
        """Take in one bulk status report; return how many elements it made final. An
        element missing from two reports in a row that show other elements of its array was
        cancelled before it started (SLURM keeps no record of those); an element whose whole
        array the scheduler has not known for ``lost_after`` seconds is LOST."""
        if self.job_id is None or self.dropped:
            return 0
        ended = 0
        array_known = any(self.element(i) in statuses for i in range(self.plan.elements))
        for index in range(self.plan.elements):
            status = statuses.get(self.element(index))
            if index in self.final_at:
                self._learn_end(index, status)
                continue
            self.missing[index] = self.missing.get(index, 0) + 1 if status is None and array_known else 0
            if self.missing[index] >= 2:
                reason = "cancelled before it started: the scheduler no longer lists it"
                status = ElementStatus(self.element(index), JobState.CANCELLED, None, reason)
            elif status is None and now - max(self.submitted_at, self.last_seen) > lost_after:
                status = ElementStatus(self.element(index), JobState.LOST, None, "unknown to the scheduler")
            if status is None:
                continue
            self.last_seen = now
            self.status[index] = status
            if status.state.is_final:
                self.final_at[index] = now
                ended += 1
        return ended

    def _learn_end(self, index: int, status: ElementStatus | None) -> None:
        """Keep the exit code or signal of a report that came after the one that made the
        element final (SLURM's accounting may learn it a poll or two later than squeue)."""
        known = self.status.get(index)
        if known is None or status is None or status.state is not known.state:
            return
        if (
            known.exit_code is None
            and known.signal is None
            and (status.exit_code, status.signal) != (None, None)
        ):
            self.status[index] = status
