"""corral: run ordinary Python functions as batch jobs on HPC clusters and get the results back.

The layers, top to bottom::

    Executor · Pool · task  (sweep to come)     front-ends: turn calls into batches, hand back futures
                │ batches of calls
             Cluster ── BatchStore               engine: write calls, submit arrays, poll in bulk,
                │ script text, job ids           complete futures       (cluster.py, store.py)
      Backend (local │ seq. │ slurm │ sge)       speaks one scheduler: render text, build argv,
                │ argv, bytes                    parse output           (backends/)
      Transport (local)                          runs a command, reads and writes files on one host

On the nodes, ``python -m corral.worker`` (worker.py) runs the calls and writes their outcomes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .attach import Attached, attach
    from .backends import NAMES as BACKENDS
    from .backends import get_backend
    from .backends.base import Submission
    from .batching import Batch
    from .checkpoint import Checkpointable, Resume
    from .cluster import Cluster
    from .commands import ShellCommandError, ShellResult
    from .config import set_defaults
    from .errors import (
        ConfigError,
        CorralError,
        DependencyError,
        JobCancelledError,
        JobError,
        JobFailedError,
        JobLostError,
        JobOutOfMemoryError,
        JobPreemptedError,
        JobTimeoutError,
        NestedSubmissionError,
        NodeFailureError,
        RemoteError,
        RemoteTraceback,
        ResourceError,
        SchedulerError,
        SerializationError,
        SubmissionBudgetError,
        SubmissionError,
        UnsafeWorkDirError,
        WorkDirError,
    )
    from .executor import Executor, get_executor
    from .futures import CorralFuture
    from .job import JobState
    from .policy import PollPolicy
    from .pool import AsyncResult, Pool
    from .resources import Resources
    from .retry import RetryPolicy
    from .tasks import JobRef, TaskFunction, sbatch, srun, task

#: public name -> module that defines it. Loaded on first use, so that the worker, which
#: imports this package on every compute node, starts as fast as a bare interpreter can.
_LAZY = {
    "BACKENDS": ("backends", "NAMES"),
    "get_backend": ("backends", "get_backend"),
    "Submission": ("backends.base", "Submission"),
    "Cluster": ("cluster", "Cluster"),
    "PollPolicy": ("policy", "PollPolicy"),
    "Executor": ("executor", "Executor"),
    "Pool": ("pool", "Pool"),
    "AsyncResult": ("pool", "AsyncResult"),
    "RetryPolicy": ("retry", "RetryPolicy"),
    "get_executor": ("executor", "get_executor"),
    "CorralFuture": ("futures", "CorralFuture"),
    "JobState": ("job", "JobState"),
    "Resources": ("resources", "Resources"),
    "Batch": ("batching", "Batch"),
    "attach": ("attach", "attach"),
    "Attached": ("attach", "Attached"),
    "Checkpointable": ("checkpoint", "Checkpointable"),
    "Resume": ("checkpoint", "Resume"),
    "JobRef": ("tasks", "JobRef"),
    "TaskFunction": ("tasks", "TaskFunction"),
    "task": ("tasks", "task"),
    "sbatch": ("tasks", "sbatch"),
    "srun": ("tasks", "srun"),
    "ShellResult": ("commands", "ShellResult"),
    "ShellCommandError": ("commands", "ShellCommandError"),
    "set_defaults": ("config", "set_defaults"),
}


def __getattr__(name: str) -> Any:
    module, attr = _LAZY.get(name, ("errors", name))
    if module == "errors" and not (name.endswith("Error") or name == "RemoteTraceback"):
        raise AttributeError(f"module 'corral' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "Attached",
    "BACKENDS",
    "Batch",
    "Checkpointable",
    "Cluster",
    "ConfigError",
    "CorralError",
    "CorralFuture",
    "DependencyError",
    "Executor",
    "JobCancelledError",
    "JobError",
    "JobRef",
    "JobFailedError",
    "JobLostError",
    "JobOutOfMemoryError",
    "JobPreemptedError",
    "JobState",
    "JobTimeoutError",
    "NestedSubmissionError",
    "NodeFailureError",
    "PollPolicy",
    "Pool",
    "RemoteError",
    "RemoteTraceback",
    "ResourceError",
    "Resume",
    "Resources",
    "RetryPolicy",
    "SchedulerError",
    "SerializationError",
    "ShellCommandError",
    "ShellResult",
    "Submission",
    "SubmissionBudgetError",
    "SubmissionError",
    "TaskFunction",
    "UnsafeWorkDirError",
    "WorkDirError",
    "attach",
    "get_backend",
    "get_executor",
    "sbatch",
    "set_defaults",
    "srun",
    "task",
]
