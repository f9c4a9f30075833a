"""The process's ``corral.join()`` barrier (slurminade's ``join``): which jobs of ``@task``
and ``sbatch`` the calls distributed from now on must wait for.

::

    submitted(refs)   every ref a task submission hands to the engine is recorded here
    close()           at a join: the refs recorded so far that have not ended become the
                      barrier; the record starts again
    current()         the barrier a call distributed now waits for (afterany)

The barrier keeps the refs of earlier barriers that have not ended yet: a job after the
second join waits for the jobs before the first one too, even when a job between the two
was cancelled early and so ended before them. What has ended is left out, as waiting for it
would change nothing. The state is the process's (every thread's); ``join`` itself, which
first flushes the open ``Batch``, is :func:`corral.frontends.batching.join`.
"""

from __future__ import annotations

import threading
from typing import Any

from .refs import JobRef

_lock = threading.Lock()
_recorded: list[JobRef[Any]] = []  # submitted since the last join
_barrier: tuple[JobRef[Any], ...] = ()  # what calls distributed now wait for
_pruned = 1024  # refs recorded after the last pruning (at least 1024)


def submitted(refs: list[JobRef[Any]]) -> None:
    """Record refs just submitted (each with its job), for the next join. A process that
    never joins must not keep every ref it ever made: those that ended are let go once the
    record has doubled."""
    global _pruned
    with _lock:
        _recorded.extend(refs)
        if len(_recorded) > 2 * _pruned:
            _recorded[:] = [ref for ref in _recorded if not ref.done()]
            _pruned = max(1024, len(_recorded))


def current() -> tuple[JobRef[Any], ...]:
    """The refs a call distributed now must wait for, however they end (empty before the
    first join). The same tuple until the next join: calls may be grouped by it."""
    return _barrier


def close() -> tuple[JobRef[Any], ...]:
    """Make every ref recorded so far, and those of the barrier before, that has not ended
    the new barrier; return it."""
    global _barrier
    with _lock:
        live = {id(ref): ref for ref in (*_barrier, *_recorded) if not ref.done()}
        _recorded.clear()
        _barrier = tuple(live.values())
        return _barrier


def reset() -> None:
    """Forget the barrier and the record (for tests)."""
    global _barrier
    with _lock:
        _recorded.clear()
        _barrier = ()
