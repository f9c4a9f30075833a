"""What an Executor's calls need from this process when it exits, as in ``concurrent.futures``.

A script may end right after ``submit()``, or after ``shutdown(wait=False)``: the standard
executors then wait at interpreter exit for the calls they were given, and so does corral.
With the local backend the calls run in this process's children, so the process waits until
every call has finished. On SLURM or Grid Engine the jobs belong to the scheduler, not to
the client: it waits only for what is not submitted yet (held back by MaxSubmitJobs or by the
executor's own limit), then leaves the jobs running. Once the exit has begun, ``submit``
raises ``RuntimeError``, as ``concurrent.futures`` does.

The wait runs where the standard library's own runs: among ``threading``'s exit hooks, which
come before ``atexit`` handlers (and so before the local backend's processes are killed).
Ctrl-C during the wait cancels the calls it waits for and says so.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cluster import Cluster
    from .tracking import BatchState

log = logging.getLogger(__name__)

_lock = threading.Lock()
# Weak: a batch that is done and dropped by the user is freed, results and all. A live batch
# is kept alive by its cluster while the engine watches it.
_watched: weakref.WeakKeyDictionary[BatchState, Cluster] = weakref.WeakKeyDictionary()
_registered = False
_exiting = False

#: ``threading._register_atexit`` (CPython 3.9+) runs before ``atexit`` handlers; it is
#: what ``concurrent.futures`` uses. Other interpreters get ``atexit``.
_register: Callable[[Callable[[], None]], object] = getattr(threading, "_register_atexit", atexit.register)


def check_open() -> None:
    """Raise RuntimeError once the interpreter has begun to exit."""
    if _exiting:
        raise RuntimeError("cannot schedule new futures after interpreter shutdown")


def watch(cluster: Cluster, batch: BatchState) -> None:
    """Keep the process alive at exit for as long as ``batch`` needs it."""
    global _registered, _exiting
    with _lock:
        if not _registered:
            try:
                _register(_wait_at_exit)
            except RuntimeError:  # the exit has begun (an executor made in an atexit handler)
                _exiting = True
            _registered = True
        _watched[batch] = cluster


def _needs_process(cluster: Cluster, batch: BatchState) -> bool:
    if batch.done:
        return False
    if not cluster.backend.detached:
        return True  # its elements are our children
    return any(not (s.submitted or s.dropped) for s in batch.subs)


def _waiting() -> list[tuple[Cluster, BatchState]]:
    with _lock:
        return [(c, b) for b, c in list(_watched.items()) if _needs_process(c, b)]


def _wait_at_exit() -> None:
    """Block the exit until no batch needs this process; Ctrl-C cancels what is left."""
    global _exiting
    _exiting = True
    announced = False
    try:
        while waiting := _waiting():
            if not announced:
                calls = sum(len(b.futures) - len(b.resolved) for _, b in waiting)
                log.info("waiting for %d call(s) of corral executors before this process exits", calls)
                announced = True
            del waiting  # hold no batch while sleeping
            time.sleep(0.05)
    except KeyboardInterrupt:
        _interrupted()
        raise


def _interrupted() -> None:
    """Ctrl-C at exit: local calls are cancelled (their processes would be killed anyway);
    on a cluster, what was not submitted yet never will be, and the jobs keep running."""
    waiting = _waiting()
    local = [(c, b) for c, b in waiting if not c.backend.detached]
    cancelled = sum(len(b.futures) - len(b.resolved) for _, b in local)
    unsent = sum(1 for c, _ in waiting if c.backend.detached)
    for cluster in {id(c): c for c, _ in local}.values():
        cluster.cancel_batches([b for c, b in local if c is cluster])
    what = [f"{cancelled} local call(s) cancelled"] if cancelled else []
    what += [f"{unsent} batch(es) not fully submitted to the cluster"] if unsent else []
    sys.stderr.write(f"corral: interrupted while waiting at exit: {', '.join(what) or 'nothing left'}\n")
