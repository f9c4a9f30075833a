"""The Backend contract: speak to one scheduler.

``render`` is pure (spec -> script text). ``submit``, ``poll`` and ``cancel`` each run one
scheduler command through the transport and read its output with a pure function of the
backend's parser module. A backend never sleeps, retries or tracks futures: the engine does.
"""

from __future__ import annotations

import abc
import logging
import os
import random
import re
import shlex
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from .. import directives
from ..environment import Environment
from ..errors import ResourceError, SchedulerError, SubmissionError
from ..job import Condition, Dependency, ElementStatus
from ..resources import Resources
from ..store.protocol import Ranks, Requeue
from ..transports.base import CommandResult, CommandTimeout, Transport

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 60.0  # seconds; a scheduler command that takes longer is killed
#: A command that fails for a transient reason (the controller busy, restarting or out of
#: reach) is run again after these pauses (seconds, +-25 % jitter); then the failure stands.
RETRY_PAUSES = (0.5, 1.0, 2.0, 4.0, 8.0)


def env_int(name: str) -> int | None:
    """A positive whole number from the environment variable ``name``, or None when unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise SchedulerError(f"{name}={value!r} must be a positive whole number")
    return int(value)


@dataclass(frozen=True)
class ArraySpec:
    """One submission: ``elements`` identical array elements, each running the worker."""

    batch_dir: str
    sub: int
    elements: int
    resources: Resources
    job_name: str
    python: str  # the interpreter that runs the worker on the node
    chdir: str  # the working directory of the job
    max_running: int | None = None  # at most this many elements at once (%M)
    dependency: Dependency | None = None  # run only after these jobs ended as it asks
    command: str | None = None  # a shell command (corral.sbatch): the worker runs it from stdin
    environment: Environment = Environment()  # setup, env, post, srun, launcher (python: above)

    @property
    def name(self) -> str:
        """The job's name at the scheduler: ``job_name=`` if set, else ``corral-`` and the
        function's name; reduced to safe characters (what ``singleton`` goes by)."""
        return directives.job_name(self.resources.job_name or self.job_name)

    def worker_argv(self) -> list[str]:
        """The worker command, without the element's index and id (the backend adds those)."""
        return [self.python, "-m", "corral.worker", self.batch_dir, str(self.sub)]

    def worker_stdin(self) -> str:
        """What follows the worker command in the script: for a shell command, a quoted
        here-document holding it exactly as the user wrote it, which bash does not expand;
        the worker runs it with bash on the node. The redirection ends the command's line
        (before a ``&``, say); the document starts on the next."""
        if self.command is None:
            return ""
        delimiter = "CORRAL_COMMAND"
        lines = set(self.command.splitlines())
        while delimiter in lines:
            delimiter += "_"
        return f" <<'{delimiter}'\n{self.command.rstrip(chr(10))}\n{delimiter}"


def warning_trap(spec: ArraySpec) -> list[str]:
    """For a job warned before its time limit: ignore the warning until the worker catches
    it (an ignored signal stays ignored across exec), so an early one cannot kill it."""
    if spec.resources.warning_seconds() is None:
        return []
    return ["trap '' USR1  # until the worker catches it"]


@dataclass(frozen=True)
class Limits:
    """What the cluster allows, as discovered (or overridden by environment variables)."""

    max_array_size: int  # elements per submission
    max_submit_jobs: int | None  # elements the user may have queued at once; None: no limit
    slots: int  # elements that can run at once with these resources


@dataclass(frozen=True)
class Submission:
    """The exact script and command line a submission uses (see ``Executor.preview``)."""

    script: str
    argv: list[str]

    def __str__(self) -> str:
        return f"# submitted as: {shlex.join(self.argv)}\n{self.script}"


class Backend(abc.ABC):
    """One scheduler. Subclasses set ``name`` and implement the abstract methods."""

    name: ClassVar[str]
    #: True when ``submit`` runs the work itself before returning (the sequential backend).
    synchronous: ClassVar[bool] = False
    #: True when jobs live on in the scheduler after this process exits (not so for the
    #: local backend, whose elements are this process's children).
    detached: ClassVar[bool] = False
    #: The dependency conditions the scheduler can enforce itself (see ArraySpec.dependency).
    conditions: ClassVar[frozenset[Condition]] = frozenset(Condition)
    #: The ids of jobs submitted outside corral that ``after("4242")`` may name, as a pattern
    #: (see :meth:`outside_job_id`); None: the backend knows no such jobs.
    outside_ids: ClassVar[re.Pattern[str] | None] = None
    #: What ``outside_ids`` accepts, for the error that rejects an id.
    outside_ids_form: ClassVar[str] = ""
    #: How a worker has its element run again after a time-limit warning (see
    #: :mod:`corral.worker.checkpoint`), handed to it in every plan; None when the backend
    #: sends no warning.
    requeue: ClassVar[Requeue | None] = None
    #: The environment variable the scheduler sets (to a count, or 1) when it runs an
    #: element again, so that the worker re-runs the calls the element had taken; None
    #: when elements never run again.
    restart_env: ClassVar[str | None] = None
    #: Seconds an element's outcomes may appear after the scheduler reports it final; None:
    #: the engine's policy (outcome_grace, for slow shared filesystems). 0 for a backend
    #: whose elements are final only once their process has exited, outcomes written.
    outcome_grace: ClassVar[float | None] = None

    #: The cluster of a multi-cluster site that every command names (SLURM's ``-M``); None:
    #: the scheduler's own default (see :class:`~corral.backends.slurm.SlurmBackend`).
    clusters: str | None = None

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._limits: dict[tuple[str | None, int], Limits] = {}
        self._limits_lock = threading.Lock()

    def adopt_elements(self, pids: Mapping[str, int]) -> None:
        """Elements of another client's batch whose processes still run on this host (a
        backend that is not ``detached``; element id -> pid), attached to here: report them
        as running until their process ends. Only such backends need to; others ignore it."""
        return None

    @abc.abstractmethod
    def render(self, spec: ArraySpec) -> str:
        """The job script for ``spec``. Pure."""

    @abc.abstractmethod
    def submit_argv(self, spec: ArraySpec, script_path: str, log_pattern: tuple[str, str]) -> list[str]:
        """The command that submits ``script_path``. Pure."""

    @abc.abstractmethod
    def submit(self, spec: ArraySpec, script_path: str, log_pattern: tuple[str, str]) -> str:
        """Submit; return the job id. ``log_pattern`` is (stdout, stderr) paths in which
        ``{job}`` and ``{index}`` stand for the job id and the element index."""

    @abc.abstractmethod
    def poll(self, job_ids: Sequence[str]) -> dict[str, ElementStatus]:
        """The status of every element of these jobs that the scheduler knows, by element id."""

    @abc.abstractmethod
    def cancel(self, job_ids: Sequence[str], *, pending_only: bool = False) -> None:
        """Cancel these jobs (``"4242"``) or array elements (``"4242_3"``); with
        ``pending_only``, only the pending elements of these jobs."""

    def shares_jobs_with(self, other: Backend) -> bool:
        """True when a job ``other`` submitted can be a dependency of this backend's jobs:
        it is this backend, or the same scheduler reached the same way (whose jobs outlive
        the backend that submitted them)."""
        return other is self or (self.detached and other.detached and other.name == self.name)

    def outside_job_id(self, job_id: str) -> str:
        """``job_id``, a job submitted outside corral that a job is to wait for, once checked
        against the scheduler's form of ids; a SubmissionError when it is not one, or when
        this backend cannot wait for such jobs at all."""
        if self.outside_ids is None:
            raise SubmissionError(
                f"after({job_id!r}): the {self.name} backend runs only its own jobs, and cannot wait "
                "for a job by its id; pass the JobRef that distribute or sbatch returned"
            )
        if not self.outside_ids.fullmatch(job_id):
            raise SubmissionError(
                f"after({job_id!r}): not a {self.name} job id; give {self.outside_ids_form}"
            )
        return job_id

    def ranks(self, environment: Environment, resources: Resources, python: str) -> Ranks | None:
        """How the worker runs each call on every task of its job when ``environment`` asks
        for ``per_task`` (see :class:`~corral.store.protocol.Ranks`); None when it does not.
        A ResourceError for a backend that cannot."""
        if not environment.per_task:
            return None
        raise ResourceError(
            f"per_task= needs SLURM's srun (or the local backend); the {self.name} backend cannot"
        )

    def explain_end(self, status: ElementStatus, stderr: str) -> ElementStatus:
        """A final status made more precise by the end of the element's stderr, where the
        scheduler may have said why it stopped the job (a memory limit, say). Pure."""
        return status

    def limits(self, resources: Resources) -> Limits:
        """The limits that apply to jobs asking for ``resources``: discovered once per
        partition (queue) and CPU count, then remembered."""
        key = (resources.partition, resources.cpus or 1)
        with self._limits_lock:
            if key not in self._limits:
                self._limits[key] = self.discover_limits(resources)
            return self._limits[key]

    def discover_limits(self, resources: Resources) -> Limits:
        """Ask the scheduler for the limits that apply to ``resources`` (see ``limits``)."""
        raise NotImplementedError(f"the {self.name} backend must define limits or discover_limits")

    def widen(self, job_id: str, max_running: int) -> None:
        """Let up to ``max_running`` elements of array ``job_id`` run at once (its throttle)."""
        return None

    def queued_jobs(self) -> int:
        """How many jobs (array elements) the user has queued now, ours included; only asked
        when a MaxSubmitJobs limit applies."""
        return 0

    def close(self) -> None:
        """Release what the backend holds (the local backend's processes)."""
        return None

    def transient(self, result: CommandResult) -> bool:
        """True when a failed command's output says the scheduler is busy, restarting or out
        of reach, so that running the same command again may well succeed. Pure; each
        backend reads its own scheduler's messages."""
        return False

    def run(
        self, argv: Sequence[str], *, timeout: float = COMMAND_TIMEOUT, idempotent: bool = True
    ) -> CommandResult:
        """Run a scheduler command. A transient failure (see :meth:`transient`) or, for an
        ``idempotent`` command, a time-out or a lost connection to the scheduler's host (a
        ``ConnectionError`` such as :class:`~corral.transports.pipe.AgentLost`: the command
        may or may not have run) is retried after each of RETRY_PAUSES; a missing program, a
        time-out or lost connection that cannot be retried, or the last transient failure is
        a SchedulerError with ``transient`` set accordingly (for ``sbatch``, the caller then
        looks for the job it may have made)."""
        pauses = list(RETRY_PAUSES)
        while True:
            log.debug("running %s", shlex.join(argv))
            try:
                result = self.transport.run(argv, timeout=timeout)
            except FileNotFoundError as exc:
                raise SchedulerError(f"{argv[0]} is not installed or not on PATH", argv=list(argv)) from exc
            except (CommandTimeout, ConnectionError) as exc:
                if not idempotent or not pauses:
                    raise SchedulerError(str(exc), argv=list(argv), transient=True) from exc
                reason = str(exc)
            else:
                if result.returncode == 0 or not self.transient(result):
                    return result
                if not pauses:
                    raise SchedulerError(
                        f"{shlex.join(argv)} failed (exit {result.returncode}) after "
                        f"{len(RETRY_PAUSES) + 1} tries: {result.stderr.strip()}",
                        argv=list(argv),
                        stderr=result.stderr,
                        transient=True,
                    )
                reason = result.stderr.strip()
            pause = pauses.pop(0) * random.uniform(0.75, 1.25)
            log.warning("%s: %s; trying again in %.1f s", argv[0], reason, pause)
            time.sleep(pause)

    def check(self, argv: Sequence[str], *, timeout: float = COMMAND_TIMEOUT) -> CommandResult:
        """Run a command that must succeed."""
        result = self.run(argv, timeout=timeout)
        if result.returncode != 0:
            raise SchedulerError(
                f"{shlex.join(argv)} failed (exit {result.returncode}): {result.stderr.strip()}",
                argv=list(argv),
                stderr=result.stderr,
            )
        return result
