"""What the calls of this process need from it when it exits, as in ``concurrent.futures``:
the same for an Executor, a Pool and ``@task`` (see :mod:`corral.frontends.sessions`).

A script may end right after ``submit()``, or after ``shutdown(wait=False)``: the standard
executors then wait at interpreter exit for the calls they were given, and so does corral.
With the local backend the calls run in this process's children, so the process waits until
every call has finished. On SLURM or Grid Engine the jobs belong to the scheduler, not to
the client: it waits only for what is not submitted yet (held back by MaxSubmitJobs or by the
executor's own limit), then leaves the jobs running. Once the exit has begun, ``submit``
raises ``RuntimeError``, as ``concurrent.futures`` does.

The wait runs where the standard library's own runs: among ``threading``'s exit hooks, which
come before ``atexit`` handlers (and so before the local backend's processes are killed).
Ctrl-C during the wait cancels the local calls it waits for, says so in one line, and ends
the process with status 130.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from ..engine.coalesce import flush_everywhere

if TYPE_CHECKING:
    from ..engine.cluster import Cluster
    from ..engine.tracking import BatchState

log = logging.getLogger(__name__)

_lock = threading.Lock()
# Weak: a batch that is done and dropped by the user is freed, results and all. A live batch
# is kept alive by its cluster while the engine watches it.
_watched: weakref.WeakKeyDictionary[BatchState, Cluster] = weakref.WeakKeyDictionary()
_registered = False
_exiting = False

#: After Ctrl-C at exit: how long to wait for cancelled local processes to be gone (the local
#: backend's SIGTERM, then SIGKILL 2 s later), and the exit status (128 + SIGINT).
GONE_WAIT = 5.0
INTERRUPTED_EXIT = 130

#: ``threading._register_atexit`` (CPython 3.9+) runs before ``atexit`` handlers; it is
#: what ``concurrent.futures`` uses. Other interpreters get ``atexit``.
_register: Callable[[Callable[[], None]], object] = getattr(threading, "_register_atexit", atexit.register)


def check_open() -> None:
    """Raise RuntimeError once the interpreter has begun to exit."""
    if _exiting:
        raise RuntimeError("cannot schedule new futures after interpreter shutdown")


def watch(cluster: Cluster, batch: BatchState) -> None:
    """Keep the process alive at exit for as long as ``batch`` needs it."""
    with _lock:
        _expect()
        _watched[batch] = cluster


def expect() -> None:
    """Calls are gathering (a burst of submits): at exit, submit them, then wait for them
    as for any batch."""
    with _lock:
        _expect()


def _expect() -> None:
    global _registered, _exiting
    if not _registered:
        try:
            _register(_wait_at_exit)
        except RuntimeError:  # the exit has begun (an executor made in an atexit handler)
            _exiting = True
        _registered = True


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
    flush_everywhere()  # calls still gathering in a burst of submits go out now
    try:
        while waiting := _waiting():
            if not announced:
                calls = sum(b.open_calls() for _, b in waiting)
                log.info("waiting for %d corral call(s) before this process exits", calls)
                announced = True
            del waiting  # hold no batch while sleeping
            time.sleep(0.05)
    except KeyboardInterrupt:
        _interrupted()


def _interrupted() -> NoReturn:
    """Ctrl-C at exit. An exception raised here would only be printed ("Exception ignored
    in ..."), and the process would exit 0 while the local backend killed its calls. Instead:
    cancel the local calls (on a cluster, what is not submitted yet never will be; its jobs
    keep running), say so in one line, wait briefly for the cancelled processes to be gone,
    and exit 130 as an interrupted program does, without running later exit handlers."""
    try:
        waiting = _waiting()
        local = [(c, b) for c, b in waiting if not c.backend.detached]
        calls = sum(b.open_calls() for _, b in local)
        jobs = sorted({j for _, b in local for j in b.live_job_ids()})
        clusters = list({id(c): c for c, _ in local}.values())
        for cluster in clusters:
            cluster.cancel_batches([b for c, b in local if c is cluster])
        parts = []
        if local:
            parts.append(f"cancelled {calls} call(s) of local job(s) {', '.join(jobs) or '(none started)'}")
        unsent = sum(b.open_calls() for c, b in waiting if c.backend.detached)
        if unsent:
            parts.append(f"{unsent} call(s) not submitted yet were dropped")
        sys.stderr.write(f"corral: interrupted; {'; '.join(parts) or 'nothing was waiting'}\n")
        sys.stderr.flush()
        end = time.monotonic() + GONE_WAIT
        for cluster in clusters:
            while time.monotonic() < end and not all(
                s.state.is_final for s in cluster.backend.poll(jobs).values()
            ):
                time.sleep(0.05)
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting for the processes to go
        pass
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(INTERRUPTED_EXIT)
