"""corral: run ordinary Python functions as batch jobs on HPC clusters and get the results back.

The layers, top to bottom; a layer imports only from those below it, and no modules import
each other in a circle (both checked by import-linter, see pyproject.toml)::

    cli/                  corral status | logs: read the work dir, never unpickle
      │
    frontends/            Executor · Pool · task + Batch · attach · sweep: turn calls
      │ batches of calls  into batches for the engine, hand back futures
    engine/               Cluster: write calls, submit arrays, poll in bulk, retry, complete
      │ specs, job ids    futures (cluster, tracking, planning, dispatch, ...)
    backends/             local │ sequential │ slurm │ sge: render scripts, build argv, parse
      │ argv, bytes       the scheduler's output (pure *_text modules)
    worker/               python -m corral.worker: runs an element's calls on a node
      │
    store/                the work-dir format: file names, records, outcome encoding
      │
    transports/           runs a command, reads and writes files on one host
      │
    config · retry · resources · directives · trust · errors · job     shared values
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backends import NAMES as BACKENDS
    from .backends import get_backend
    from .backends.base import Submission
    from .config import set_defaults
    from .engine.cluster import Cluster
    from .engine.futures import CorralFuture
    from .engine.policy import PollPolicy
    from .engine.request import Request
    from .environment import Environment
    from .errors import (
        ConfigError,
        CorralError,
        DependencyError,
        FormatError,
        FormatVersionError,
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
    from .frontends.attach import Attached, attach
    from .frontends.batching import Batch, join
    from .frontends.commands import ShellCommandError, ShellResult
    from .frontends.executor import Executor, get_executor
    from .frontends.pool import Pool
    from .frontends.pool_results import AsyncResult
    from .frontends.progress_bar import as_completed
    from .frontends.refs import JobRef
    from .frontends.tasks import TaskFunction, sbatch, srun, task
    from .job import JobState
    from .resources import Resources
    from .retry import RetryPolicy
    from .worker.checkpoint import Checkpointable, Resume
    from .worker.ranks import TaskInfo, task_info

#: public name -> module that defines it. Loaded on first use, so that the worker, which
#: imports this package on every compute node, starts as fast as a bare interpreter can.
_LAZY = {
    "BACKENDS": ("backends", "NAMES"),
    "get_backend": ("backends", "get_backend"),
    "Submission": ("backends.base", "Submission"),
    "Cluster": ("engine.cluster", "Cluster"),
    "Request": ("engine.request", "Request"),
    "progress": ("worker.progress", "progress"),
    "should_stop": ("worker.progress", "should_stop"),
    "Stopped": ("worker.progress", "Stopped"),
    "PollPolicy": ("engine.policy", "PollPolicy"),
    "Executor": ("frontends.executor", "Executor"),
    "Pool": ("frontends.pool", "Pool"),
    "as_completed": ("frontends.progress_bar", "as_completed"),
    "AsyncResult": ("frontends.pool_results", "AsyncResult"),
    "RetryPolicy": ("retry", "RetryPolicy"),
    "get_executor": ("frontends.executor", "get_executor"),
    "CorralFuture": ("engine.futures", "CorralFuture"),
    "JobState": ("job", "JobState"),
    "Resources": ("resources", "Resources"),
    "Batch": ("frontends.batching", "Batch"),
    "join": ("frontends.batching", "join"),
    "attach": ("frontends.attach", "attach"),
    "Attached": ("frontends.attach", "Attached"),
    "Checkpointable": ("worker.checkpoint", "Checkpointable"),
    "Resume": ("worker.checkpoint", "Resume"),
    "task_info": ("worker.ranks", "task_info"),
    "TaskInfo": ("worker.ranks", "TaskInfo"),
    "Environment": ("environment", "Environment"),
    "JobRef": ("frontends.refs", "JobRef"),
    "TaskFunction": ("frontends.tasks", "TaskFunction"),
    "task": ("frontends.tasks", "task"),
    "sbatch": ("frontends.tasks", "sbatch"),
    "srun": ("frontends.tasks", "srun"),
    "ShellResult": ("frontends.commands", "ShellResult"),
    "ShellCommandError": ("frontends.commands", "ShellCommandError"),
    "set_defaults": ("config", "set_defaults"),
}


def __getattr__(name: str) -> Any:
    if name == "sweep":  # a module of its own (corral.sweep), loaded on first use too
        return importlib.import_module(".sweep", __name__)
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
    "FormatError",
    "FormatVersionError",
    "CorralError",
    "CorralFuture",
    "DependencyError",
    "Environment",
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
    "Request",
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
    "Stopped",
    "SubmissionError",
    "TaskFunction",
    "TaskInfo",
    "UnsafeWorkDirError",
    "WorkDirError",
    "as_completed",
    "attach",
    "get_backend",
    "get_executor",
    "join",
    "sbatch",
    "progress",
    "set_defaults",
    "should_stop",
    "srun",
    "sweep",
    "task",
    "task_info",
]
