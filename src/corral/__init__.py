"""corral: run ordinary Python functions as batch jobs on HPC clusters and get the results back.

The layers, top to bottom::

    Executor  (Pool · task · sweep to come)     front-ends: turn calls into batches, hand back futures
                │ batches of calls
             Cluster ── BatchStore               engine: write calls, submit arrays, poll in bulk,
                │ script text, job ids           complete futures       (cluster.py, store.py)
      Backend (local │ sequential │ slurm)       speaks one scheduler: render text, build argv,
                │ argv, bytes                    parse output           (backends/)
      Transport (local)                          runs a command, reads and writes files on one host

On the nodes, ``python -m corral.worker`` (worker.py) runs the calls and writes their outcomes.
"""

from .backends import NAMES as BACKENDS
from .backends import get_backend
from .backends.base import Submission
from .cluster import Cluster, PollPolicy
from .errors import (
    CorralError,
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
    SubmissionError,
)
from .executor import Executor, get_executor
from .futures import CorralFuture
from .job import JobState
from .resources import Resources

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "Cluster",
    "CorralError",
    "CorralFuture",
    "Executor",
    "JobCancelledError",
    "JobError",
    "JobFailedError",
    "JobLostError",
    "JobOutOfMemoryError",
    "JobPreemptedError",
    "JobState",
    "JobTimeoutError",
    "NestedSubmissionError",
    "NodeFailureError",
    "PollPolicy",
    "RemoteError",
    "RemoteTraceback",
    "ResourceError",
    "Resources",
    "SchedulerError",
    "SerializationError",
    "Submission",
    "SubmissionError",
    "get_backend",
    "get_executor",
]
