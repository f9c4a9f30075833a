"""The exceptions corral raises, drawn once::

    CorralError
    ├── ResourceError            a resource option is unknown or malformed (also a ValueError);
    │                            raised before anything is submitted
    ├── ConfigError              a config file, profile or CORRAL_* variable is wrong (also a
    │                            ValueError); names the file or variable and the key
    ├── SubmissionBudgetError    this process reached its submission budget (a runaway loop?)
    ├── NestedSubmissionError    code running inside a job tried to submit jobs by accident
    ├── SerializationError       a function or argument cannot be pickled (also a TypeError);
    │                            raised before anything is submitted
    ├── SchedulerError           a scheduler command failed or timed out
    │   └── SubmissionError      the scheduler refused a submission (nothing is left half-submitted)
    ├── JobError                 a call's job ended without an outcome; names job, state, node,
    │   │                        exit code or signal, the key line of the stderr and its tail
    │   ├── JobCancelledError    CANCELLED (from outside, or by the executor)
    │   │   └── DependencyError  never ran: the jobs it was to follow did not end as asked
    │   ├── JobFailedError       FAILED: the worker process itself died
    │   ├── JobTimeoutError      TIMEOUT: the job hit its time limit
    │   ├── JobOutOfMemoryError  OUT_OF_MEMORY
    │   ├── NodeFailureError     NODE_FAIL or BOOT_FAIL: infrastructure, not the call's fault
    │   ├── JobPreemptedError    PREEMPTED
    │   └── JobLostError         the job left the scheduler and no outcome ever appeared
    ├── RemoteError              the call raised an exception that could not be sent back;
    │                            carries its type name and traceback as text
    ├── FormatError              a work-dir record (plan, claim, manifest) is not one this
    │   │                        corral writes (also a ValueError); names the file
    │   └── FormatVersionError   the batch was written in another work-dir format version
    └── WorkDirError             the work dir cannot be created or written (also an OSError);
        │                        names the path and how to choose another
        └── UnsafeWorkDirError   a work dir folder or file someone else owns or can write, or
                                 a symbolic link inside it (also a PermissionError); names the
                                 path, owner, mode and the fix (see corral.trust)

A call that raises returns the user's *own* exception from ``Future.result()``; its
``__cause__`` is a :class:`RemoteTraceback` holding the traceback formatted on the node.
"""

from __future__ import annotations

from .job import Attempt, JobState, describe_attempts


class CorralError(Exception):
    """Base class of every error corral raises itself."""


class ResourceError(CorralError, ValueError):
    """A resource option is unknown or malformed; raised before anything is submitted."""


class ConfigError(CorralError, ValueError):
    """A configuration file, profile or environment variable holds something wrong; the
    message names the file (or variable) and the key."""


class SubmissionBudgetError(CorralError):
    """This process has made as many scheduler submissions as its budget allows."""


class NestedSubmissionError(CorralError):
    """A job tried to submit further jobs without saying so on purpose."""


class SerializationError(CorralError, TypeError):
    """A function or an argument cannot be pickled; raised before anything is submitted."""


class SchedulerError(CorralError):
    """A scheduler command failed, timed out, or printed something we cannot read."""

    def __init__(
        self, message: str, *, argv: list[str] | None = None, stderr: str = "", transient: bool = False
    ) -> None:
        super().__init__(message)
        self.argv = argv
        self.stderr = stderr
        #: True when the scheduler was busy or out of reach: the same command may work later.
        self.transient = transient


class SubmissionError(SchedulerError):
    """The scheduler refused a submission. Parts already submitted were cancelled."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised on a compute node, attached as ``__cause__``."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb.rstrip()}\n"""'


class RemoteError(CorralError):
    """A call raised an exception that could not be pickled back to the client."""

    def __init__(self, type_name: str, message: str, tb: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.tb = tb


class JobError(CorralError):
    """A call's job reached a final state without writing the call's outcome."""

    def __init__(
        self,
        *,
        state: JobState,
        job_id: str | None,
        call: int,
        batch: str,
        node: str | None = None,
        reason: str = "",
        stderr_tail: str = "",
        attempts: tuple[Attempt, ...] = (),
        work_dir: str = "",
        exit_code: int | None = None,
        signal: int | None = None,
        key_line: str = "",
        hint: str = "",
    ) -> None:
        self.state = state
        self.job_id = job_id
        self.call = call
        self.batch = batch
        self.node = node
        self.reason = reason
        self.stderr_tail = stderr_tail
        #: Every attempt of the call, when it was resubmitted (the last one is this error's).
        self.attempts = attempts
        self.work_dir = work_dir  # the batch's folder, which keeps the call's logs
        self.exit_code = exit_code  #: the job's exit code, when the scheduler reported one
        self.signal = signal  #: the signal that ended the job, when one did
        #: The line of the stderr that says what went wrong (a traceback's exception line).
        self.key_line = key_line
        self.hint = hint  #: what to do about it, when corral recognises the cause
        where = f" on {node}" if node else ""
        why = f" ({reason})" if reason else ""
        message = (
            f"call {call} of batch {batch!r}: job {job_id or '(never started)'} "
            f"ended {state.name}{where}{why} without a result"
        )
        if key_line:
            message += f"\n  {key_line}"
        if hint:
            message += f"\n  hint: {hint}"
        if stderr_tail.strip():
            indented = "\n".join("    " + line for line in stderr_tail.rstrip().splitlines())
            message += f"\n  stderr (last lines):\n{indented}"
        if len(attempts) > 1:
            message += "\n  " + describe_attempts(attempts).replace("\n", "\n  ")
        if work_dir:
            message += f"\n  work dir: {work_dir}"
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:  # keyword-only __init__ needs help to pickle
        return (_rebuild_job_error, (type(self), self.__dict__.copy()))


def _rebuild_job_error(cls: type[JobError], state: dict[str, object]) -> JobError:
    return cls(**state)  # type: ignore[arg-type]


class JobCancelledError(JobError):
    """The job was cancelled (``scancel``, or the executor cancelling its jobs)."""


class JobFailedError(JobError):
    """The job's worker process died without writing an outcome."""


class JobTimeoutError(JobError):
    """The job was stopped at its time limit."""


class JobOutOfMemoryError(JobError):
    """The job was killed for exceeding its memory limit."""


class NodeFailureError(JobError):
    """The node running the job failed (NODE_FAIL, BOOT_FAIL)."""


class JobPreemptedError(JobError):
    """The job was preempted by higher-priority work and not requeued."""


class JobLostError(JobError):
    """The job left the scheduler and its outcome never appeared."""


class DependencyError(JobCancelledError):
    """The job never ran: the jobs it was to run after did not end as its condition asks
    (``after(..., condition="ok")`` on a job that failed), so the scheduler dropped it."""


#: Which error a call gets when its job ends in a given state without an outcome.
ERROR_FOR_STATE: dict[JobState, type[JobError]] = {
    JobState.CANCELLED: JobCancelledError,
    JobState.FAILED: JobFailedError,
    JobState.TIMEOUT: JobTimeoutError,
    JobState.OUT_OF_MEMORY: JobOutOfMemoryError,
    JobState.NODE_FAIL: NodeFailureError,
    JobState.BOOT_FAIL: NodeFailureError,
    JobState.PREEMPTED: JobPreemptedError,
    JobState.DEADLINE: JobTimeoutError,
    JobState.COMPLETED: JobLostError,  # the job ended fine, yet the call left no outcome
    JobState.LOST: JobLostError,
}


def job_error(state: JobState, **details: object) -> JobError:
    """Build the typed error for a call whose job ended in ``state``."""
    return ERROR_FOR_STATE.get(state, JobLostError)(state=state, **details)  # type: ignore[arg-type]


class WorkDirError(CorralError, OSError):
    """The work dir cannot be created or written (a read-only or missing folder); the message
    names the path and how to choose another one (``directory=``, ``CORRAL_DIR``)."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class UnsafeWorkDirError(WorkDirError, PermissionError):
    """A work dir folder or a file corral would unpickle is not the user's alone (another
    owner, writable by group or others, or a symbolic link); nothing was read from it. The
    message names the path, its owner and mode, and the fix (see :mod:`corral.trust`)."""

    def __init__(
        self, message: str, *, path: str = "", owner: int | None = None, mode: int | None = None
    ) -> None:
        super().__init__(message, path=path)
        self.owner = owner  #: the uid that owns the path, when that was the reason
        self.mode = mode  #: its permission bits


class FormatError(CorralError, ValueError):
    """A record read back from a work dir (a submission's plan, a claim, a manifest) is not
    one this corral writes: malformed, foreign, or torn. The message names the file."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path  #: the file (or batch folder) that holds it


class FormatVersionError(FormatError):
    """The batch was written in another version of corral's work-dir format; nothing of it
    was read beyond its manifest. The message says which version and what to do."""

    def __init__(self, message: str, *, path: str = "", found: int | None = None) -> None:
        super().__init__(message, path=path)
        self.found = found  #: the version the batch says it has (1 when it says none)


class PreflightError(CorralError):
    """A remote host cannot run this process's calls, found before anything was written
    there: its Python, corral or cloudpickle differ from this process's, or corral's agent
    cannot start (no such python, no corral, ssh cannot connect, log in or trust the host's
    key). The message names the host and python, quotes what was said, and says what to do."""
