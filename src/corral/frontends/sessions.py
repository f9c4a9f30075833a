"""The engines behind ``@task``, ``sbatch`` and ``srun``: one :class:`~corral.engine.cluster.Cluster`
per backend and work dir for the whole process, and what happens to their work when the
process ends.

Distributed work belongs to the scheduler, not to the client: on SLURM or Grid Engine the
client may exit as soon as everything is submitted. At exit corral therefore waits only for
what is not submitted yet (held back by MaxSubmitJobs, or waiting for the job id of a job it
depends on). With the local backend the jobs are this process's children, so the process
waits at exit until they have finished; a script without a cluster thus runs to completion,
as it would on one. Ctrl-C during that wait cancels those jobs, says so, and ends the process
with status 130, as an interrupted program does. The wait itself is
:mod:`corral.frontends.exiting`'s, the same as an Executor's.
"""

from __future__ import annotations

import os
import threading

from ..backends import get_backend
from ..engine.cluster import Cluster
from ..engine.tracking import BatchState
from . import exiting

_lock = threading.Lock()
_clusters: dict[tuple[str, str | None], Cluster] = {}


def cluster_for(backend: str, directory: str | None) -> Cluster:
    """The process's engine for a backend name and work dir, made on first use."""
    key = (backend, os.path.abspath(directory) if directory else None)
    with _lock:
        if key not in _clusters:
            _clusters[key] = Cluster(get_backend(backend), directory)
        return _clusters[key]


def track(cluster: Cluster, batch: BatchState) -> None:
    """Keep the process alive at exit for as long as ``batch`` needs it (see
    :mod:`corral.frontends.exiting`, shared with the Executor and Pool)."""
    exiting.watch(cluster, batch)
