"""The engines behind ``@task``, ``sbatch`` and ``srun``: one :class:`~corral.cluster.Cluster`
per backend and work dir for the whole process, and what happens to their work when the
process ends.

Distributed work belongs to the scheduler, not to the client: on SLURM or Grid Engine the
client may exit as soon as everything is submitted. At exit corral therefore waits only for
what is not submitted yet (held back by MaxSubmitJobs, or waiting for the job id of a job it
depends on). With the local backend the jobs are this process's children, so the process
waits at exit until they have finished; a script without a cluster thus runs to completion,
as it would on one. Ctrl-C during that wait cancels those jobs, says so, and ends the process
with status 130, as an interrupted program does.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from typing import NoReturn

from .backends import get_backend
from .cluster import Cluster
from .tracking import BatchState

log = logging.getLogger(__name__)

_lock = threading.Lock()
_clusters: dict[tuple[str, str | None], Cluster] = {}
_batches: list[tuple[Cluster, BatchState]] = []
_registered = False


def cluster_for(backend: str, directory: str | None) -> Cluster:
    """The process's engine for a backend name and work dir, made on first use."""
    global _registered
    key = (backend, os.path.abspath(directory) if directory else None)
    with _lock:
        if key not in _clusters:
            _clusters[key] = Cluster(get_backend(backend), directory)
        if not _registered:
            atexit.register(_drain_at_exit)
            _registered = True
        return _clusters[key]


def track(cluster: Cluster, batch: BatchState) -> None:
    """Remember a batch of distributed calls until it no longer needs this process."""
    with _lock:
        _batches[:] = [(c, b) for c, b in _batches if _needs_process(c, b)]
        _batches.append((cluster, batch))


def drain(timeout: float | None = None) -> bool:
    """Wait until no distributed batch needs this process any more (see the module doc);
    True when none does. Runs at interpreter exit."""
    end = None if timeout is None else time.monotonic() + timeout
    announced = False
    while True:
        with _lock:
            waiting = [(c, b) for c, b in _batches if _needs_process(c, b)]
            _batches[:] = waiting
        if not waiting:
            return True
        if not announced:
            calls = sum(len(b.futures) - len(b.resolved) for _, b in waiting)
            log.info("waiting for %d distributed call(s) before this process exits", calls)
            announced = True
        if end is not None and time.monotonic() >= end:
            return False
        time.sleep(0.05)


#: Seconds to wait for cancelled local processes to be gone before the process exits: the
#: local backend's SIGTERM, then its SIGKILL 2 s later, with time to reap.
GONE_WAIT = 5.0
INTERRUPTED_EXIT = 130  # 128 + SIGINT, what a shell reports for a program Ctrl-C stopped


def _drain_at_exit() -> None:
    """:func:`drain` at interpreter exit. A KeyboardInterrupt raised in an atexit callback
    is only printed, and the process exits 0 with its jobs still queued: stop them instead."""
    try:
        drain()
    except KeyboardInterrupt:
        interrupted()


def interrupted() -> NoReturn:
    """Cancel the local jobs this process waits for, say so on stderr in one line, and exit
    with status 130 (without running later exit handlers: the user asked to stop)."""
    try:
        with _lock:
            waiting = [(c, b) for c, b in _batches if _needs_process(c, b)]
            _batches.clear()
        local = [(c, b) for c, b in waiting if not c.backend.detached]
        calls = sum(len(b.futures) - len(b.resolved) for _, b in local)
        jobs = sorted({j for _, b in local for j in b.live_job_ids()})
        for cluster in {id(c): c for c, _ in local}.values():
            cluster.cancel_batches([b for c, b in local if c is cluster])
        parts = []
        if local:
            parts.append(f"cancelled {calls} call(s) of local job(s) {', '.join(jobs) or '(none started)'}")
        unsent = sum(len(b.futures) - len(b.resolved) for c, b in waiting if c.backend.detached)
        if unsent:
            parts.append(f"{unsent} call(s) not submitted yet were dropped")
        sys.stderr.write(f"corral: interrupted; {'; '.join(parts) or 'nothing was waiting'}\n")
        sys.stderr.flush()
        _wait_gone(local, jobs)
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting for the processes to go
        pass
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(INTERRUPTED_EXIT)


def _wait_gone(local: list[tuple[Cluster, BatchState]], jobs: list[str]) -> None:
    """Wait until the cancelled local elements have ended (their processes are gone)."""
    end = time.monotonic() + GONE_WAIT
    for cluster in {id(c): c for c, _ in local}.values():
        while time.monotonic() < end:
            if all(s.state.is_final for s in cluster.backend.poll(jobs).values()):
                break
            time.sleep(0.05)


def _needs_process(cluster: Cluster, batch: BatchState) -> bool:
    if batch.done:
        return False
    if not cluster.backend.detached:
        return True  # its elements are our children
    return any(not (s.submitted or s.dropped) for s in batch.subs)
