"""``JobRef``: the handle a distributed call hands back (see :mod:`.tasks`). A ``Batch``
(:mod:`.batching`) holds refs until it is flushed, then the submission gives each its future."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from ..engine.futures import CorralFuture
from ..errors import CorralError
from ..job import JobState

R = TypeVar("R")


class JobRef(Generic[R]):
    """A handle on one distributed call: its job, its state, and its result when wanted.

    Inside an open ``Batch`` a ref has no job yet (``job_id`` is None); it gets one when the
    batch is flushed, and may be waited on by later calls (``f.after(ref)``) meanwhile.
    """

    def __init__(self, name: str) -> None:
        self.name = name  # the function's name, or the shell command
        self._future: CorralFuture | None = None
        self._cluster: Any = None  # the engine that submitted it
        self._unsent = ""  # why it will never be submitted (its Batch block raised)
        self._holder: object = None  # the open Batch holding it

    @property
    def submitted(self) -> bool:
        """True once the call has been handed to the scheduler."""
        return self._future is not None

    @property
    def job_id(self) -> str | None:
        """The scheduler's id of the job (array element) that runs the call, e.g.
        ``"4242_3"``; None until submitted."""
        return self._future.job_id if self._future is not None else None

    @property
    def state(self) -> JobState:
        """PENDING until the call starts (and while not submitted), RUNNING, then final."""
        if self._future is None:
            return JobState.CANCELLED if self._unsent else JobState.PENDING
        return self._future.state

    @property
    def future(self) -> CorralFuture:
        """The ``concurrent.futures`` future of the call (for ``wait``, ``as_completed``)."""
        return self.sent()

    def done(self) -> bool:
        """True when the call has finished, failed or been cancelled."""
        return self._future is not None and self._future.done()

    def result(self, timeout: float | None = None) -> R:
        """Wait for the call; return its value or raise its own exception (or a JobError
        naming the job and how it ended)."""
        value: R = self.sent().result(timeout)
        return value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the call; return its exception, or None when it succeeded."""
        return self.sent().exception(timeout)

    def stdout(self) -> str:
        """What the call printed to stdout so far."""
        return self.sent().stdout()

    def stderr(self) -> str:
        """What the call printed to stderr so far."""
        return self.sent().stderr()

    def cancel(self) -> bool:
        """Cancel the job that runs this call (with a ``Batch``, that job may hold other
        calls, which fail with JobCancelledError too). False when already finished or not
        yet submitted."""
        if self._future is None:
            return False
        return self._future.cancel_job()

    # -- what a Batch and the submission do to a ref ---------------------------------------------

    def hold(self, batch: object) -> None:
        """The open ``batch`` collected this ref: it is submitted when the batch is flushed."""
        self._holder = batch

    def held_by(self, batch: object) -> bool:
        return batch is not None and self._holder is batch

    def send(self, future: CorralFuture, cluster: Any) -> None:
        """The call was submitted by ``cluster``: ``future`` is its outcome."""
        self._future, self._cluster, self._holder = future, cluster, None

    def drop(self, why: str) -> None:
        """The call will never be submitted, for the reason ``why``."""
        if self._future is None:
            self._unsent, self._holder = why, None

    @property
    def unsent(self) -> str:
        """Why the call will never be submitted; empty while it may be."""
        return self._unsent

    @property
    def cluster(self) -> Any:
        """The engine that submitted the call (None before)."""
        return self._cluster

    def sent(self) -> CorralFuture:
        """The call's future; CorralError when it is not submitted (and why)."""
        if self._future is not None:
            return self._future
        if self._unsent:
            raise CorralError(f"{self.name}: never submitted: {self._unsent}")
        raise CorralError(
            f"{self.name} is in an open Batch and not submitted yet: it is when the block "
            "ends or at batch.flush()"
        )

    def __repr__(self) -> str:
        return f"<JobRef {self.name} job={self.job_id} state={self.state.name}>"
