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

import dataclasses
import os
import threading
from typing import Any

from ..config import Settings
from ..engine.cluster import Cluster
from ..engine.tracking import BatchState
from . import exiting
from .hosts import open_cluster

_lock = threading.Lock()
_clusters: dict[tuple[Any, ...], Cluster] = {}


def cluster_for(settings: Settings, backend: str | None = None, directory: str | None = None) -> Cluster:
    """The process's engine for the host, backend and work dir of ``settings`` (or the
    ``backend`` name and ``directory`` given), made on first use."""
    settings = dataclasses.replace(
        settings, backend=backend or settings.backend, directory=directory or settings.directory
    )
    root = settings.directory
    if root and settings.ssh is None:
        root = os.path.abspath(root)
    python = settings.environment.python if settings.ssh else None  # a host's agent's interpreter
    key = (settings.ssh, settings.ssh_config, python, settings.backend, root, settings.clusters)
    with _lock:
        if key not in _clusters:
            _clusters[key] = open_cluster(settings)
        return _clusters[key]


def track(cluster: Cluster, batch: BatchState) -> None:
    """Keep the process alive at exit for as long as ``batch`` needs it (see
    :mod:`corral.frontends.exiting`, shared with the Executor and Pool)."""
    exiting.watch(cluster, batch)
