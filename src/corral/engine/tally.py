"""Where a set of calls stands, counted for a progress view (see
:mod:`corral.frontends.progress_bar`): how many wait, run, ended well, failed or were
cancelled, and how many attempts were run again.

A whole batch is counted by its ledger, which keeps the counts as calls move, so a look
costs the same for ten calls or a hundred thousand. Futures that are only part of a batch
(an ``as_completed`` over some of a batch's calls) are counted one call at a time. A future
still gathering in a burst of submits counts as pending and is never submitted by a look.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..job import JobState
from .futures import CorralFuture
from .ledger_values import Counts
from .tracking import BatchState

#: Nothing counted yet.
ZERO = Counts(0, 0, 0, 0, 0, 0)

#: Which count a call's state adds to (the final states but two are failures).
_SLOT = {JobState.PENDING: 0, JobState.RUNNING: 1, JobState.COMPLETED: 2, JobState.CANCELLED: 4}


def ended(counts: Counts) -> int:
    """Calls that will not change any more."""
    return counts.done + counts.failed + counts.cancelled


def added(a: Counts, b: Counts) -> Counts:
    return Counts(
        a.pending + b.pending, a.running + b.running, a.done + b.done, a.failed + b.failed,
        a.cancelled + b.cancelled, a.retried + b.retried,
    )  # fmt: skip


class Tally:
    """Counts the calls of whole batches and of loose futures, again at each :meth:`counts`."""

    def __init__(self, batches: Sequence[BatchState] = (), futures: Iterable[CorralFuture] = ()) -> None:
        self._whole: list[BatchState] = list(batches)
        self._loose: list[CorralFuture] = list(futures)
        self._parts: dict[BatchState, list[int]] = {}
        self.total = sum(len(b.futures) for b in self._whole) + len(self._loose)

    def counts(self) -> Counts:
        """Where the calls stand now."""
        self._sort_loose()
        total = ZERO
        for batch in self._whole:
            total = added(total, batch.ledger.counts())
        for batch, calls in self._parts.items():
            total = added(total, _count_calls(batch, calls))
        return added(total, Counts(len(self._loose), 0, 0, 0, 0, 0))

    def _sort_loose(self) -> None:
        """Futures bound to their batch since the last look leave the loose list: a batch
        whose every call is here is counted whole, by its ledger."""
        if not self._loose:
            return
        still = []
        for future in self._loose:
            batch = future.bound_source
            if isinstance(batch, BatchState):
                self._parts.setdefault(batch, []).append(future.call)
            else:
                still.append(future)
        self._loose = still
        for batch in [b for b, calls in self._parts.items() if len(set(calls)) == len(b.futures)]:
            del self._parts[batch]
            self._whole.append(batch)


def _count_calls(batch: BatchState, calls: Sequence[int]) -> Counts:
    slots = [0, 0, 0, 0, 0]
    retried = 0
    for call in calls:
        slots[_SLOT.get(batch.state_of(call), 3)] += 1
        retried += batch.ledger.attempt(call)
    pending, running, done, failed, cancelled = slots
    return Counts(pending, running, done, failed, cancelled, retried)
