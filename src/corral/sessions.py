"""The engines behind ``@task``, ``sbatch`` and ``srun``: one :class:`~corral.cluster.Cluster`
per backend and work dir for the whole process, and what happens to their work when the
process ends.

Distributed work belongs to the scheduler, not to the client: on SLURM or Grid Engine the
client may exit as soon as everything is submitted. At exit corral therefore waits only for
what is not submitted yet (held back by MaxSubmitJobs, or waiting for the job id of a job it
depends on). With the local backend the jobs are this process's children, so the process
waits at exit until they have finished; a script without a cluster thus runs to completion,
as it would on one.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time

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
            atexit.register(drain)
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


def _needs_process(cluster: Cluster, batch: BatchState) -> bool:
    if batch.done:
        return False
    if not cluster.backend.detached:
        return True  # its elements are our children
    return any(not (s.submitted or s.dropped) for s in batch.subs)
