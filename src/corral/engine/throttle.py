"""The limit of an executor or a pool: at most N array elements of its batches live at once.

An Executor's ``max_workers`` (``max_running``) and a Pool's ``processes`` mean what they mean
in ``concurrent.futures`` and ``multiprocessing``: N calls at once for the whole executor, not
N per batch. Each batch's arrays are still throttled to N (``%N``), and on top of that the
engine holds back a submission while the executor's live elements (pending or running in
the scheduler) leave no room for it. One :class:`Throttle` is shared by every batch of one
executor; the dispatcher (:mod:`corral.engine.dispatch`) asks it before each submission, under the
cluster's lock.

Submissions wait in the order they came (first in, first out, as an executor's queue). A
pull array (see :mod:`corral.engine.planning`) that finds some room but not enough is shrunk to the
room left: its elements take the calls among them. A submission larger than the limit (a
static array of ``chunksize`` elements, which ``%N`` throttles itself) waits until nothing
else of the executor is live. An element counts as live until the scheduler reports it final.
"""

from __future__ import annotations

from ..job import ElementStatus
from .tracking import BatchState, SubState


class Throttle:
    """At most ``limit`` live array elements among the batches that share this object."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a throttle's limit must be at least 1, not {limit!r}")
        self.limit = limit
        self._live: list[SubState] = []  # submitted, some element not yet final
        self._waiting: list[tuple[BatchState, SubState]] = []  # in the order they came

    def room(self, batch: BatchState, sub: SubState) -> int:
        """How many elements ``sub`` may have if it is submitted now: 0 while it must wait
        (others came first, or no room is left), else up to ``sub.plan.elements``."""
        self._prune()
        if not any(s is sub for _, s in self._waiting):
            self._waiting.append((batch, sub))
        if self._waiting[0][1] is not sub:
            return 0
        used = self.used()
        if used == 0:
            return sub.plan.elements  # alone: a larger static array keeps to %N by itself
        return max(0, min(sub.plan.elements, self.limit - used))

    def submitted(self, sub: SubState) -> None:
        """``sub`` went to the scheduler: its elements count until they are final."""
        self._waiting = [(b, s) for b, s in self._waiting if s is not sub]
        self._live.append(sub)

    def used(self) -> int:
        """Elements counted as live now (an array throttled to N counts N at most)."""
        self._live = [s for s in self._live if not s.all_final]
        return sum(min(s.live_elements, self.limit) for s in self._live)

    def waiting(self) -> bool:
        """True while a submission waits for room."""
        self._prune()
        return bool(self._waiting)

    def _prune(self) -> None:
        # A waiting submission leaves the line once submitted, dropped (its calls were
        # cancelled) or when its batch is done (cancelled as a whole).
        self._waiting = [(b, s) for b, s in self._waiting if not (s.submitted or s.dropped or b.done)]


def settle(sub: SubState, statuses: dict[str, ElementStatus], now: float) -> bool:
    """Mark the elements of a done batch's submission that a status report shows final, or
    no longer lists (its calls are all done: an element the scheduler forgot is not running);
    True once every element is final."""
    for index in range(sub.plan.elements):
        status = statuses.get(sub.element(index))
        if index not in sub.final_at and (status is None or status.state.is_final):
            sub.final_at[index] = now
    return sub.all_final
