"""Futures handed back by the engine, and the decoding of outcomes into values or errors.

:class:`CorralFuture` is a ``concurrent.futures.Future[T]`` (``Executor.submit(f)`` with
``def f() -> int`` is a ``CorralFuture[int]`` to a type checker; a bare ``CorralFuture`` means
``CorralFuture[Any]``), and it is awaitable: ``await future`` in a coroutine, or
``asyncio.gather(*futures)``, through ``asyncio.wrap_future``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import pickle
import sys
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures._base import CANCELLED_AND_NOTIFIED as _NOTIFIED
from concurrent.futures._base import PENDING as _PENDING
from concurrent.futures._base import RUNNING as _RUNNING
from typing import TYPE_CHECKING, Any, Generic, Protocol, overload

import cloudpickle

from ..errors import RemoteError, RemoteTraceback
from ..job import JobState
from ..store.batch import BatchStore, Outcome
from ..store.stream_codec import Progress
from .elements import SubState

if TYPE_CHECKING:
    # A default of Any (PEP 696, seen by type checkers only: typing has it from 3.13) keeps a
    # bare ``CorralFuture`` in annotations, the engine's and users', valid under --strict.
    from typing_extensions import TypeVar

    T = TypeVar("T", default=Any)
else:
    from typing import TypeVar

    T = TypeVar("T")


class Gathering(Protocol):
    """A burst of submits that a pending future waits in (:class:`corral.engine.coalesce.Pending`)."""

    def flush(self) -> None: ...
    def withdraw(self, future: CorralFuture) -> bool: ...


class CallSource(Protocol):
    """What a future (and the modules that explain or wait for its call) asks of the
    engine's bookkeeping of its batch (:class:`corral.engine.tracking.BatchState`)."""

    store: BatchStore

    @property
    def futures(self) -> Sequence[CorralFuture]: ...
    def task(self, call: int) -> tuple[int, int]: ...
    def job_id_of(self, call: int) -> str | None: ...
    def state_of(self, call: int) -> JobState: ...
    def cancel_call(self, call: int) -> bool: ...
    def cancel_element(self, call: int) -> bool: ...
    def dependency_of(self, call: int) -> list[tuple[str, int | None]] | None: ...
    def sub_of_job(self, job_id: str) -> SubState | None: ...
    def output(self, call: int, stream: str) -> str: ...
    def progress_of(self, call: int) -> Progress | None: ...
    def request_stop(self, call: int) -> bool: ...


class CorralFuture(concurrent.futures.Future[T], Generic[T]):
    """A ``concurrent.futures.Future`` for one call, with the job behind it.

    Works with ``concurrent.futures.wait`` and ``as_completed``. ``result()`` raises the call's
    own exception type, its ``__cause__`` holding the traceback formatted on the node.
    ``await future`` gives the value (or raises) in a coroutine, as ``asyncio.wrap_future``
    does; cancelling the awaiting task cancels the call if it has not started.
    """

    def __init__(self, batch: CallSource | None, call: int, *, pending: Gathering | None = None) -> None:
        super().__init__()
        self._batch = batch
        self._pending = pending  # the burst of submits it waits in, until bound to its batch
        self.call = call  # its index in the batch (-1 while pending)

    def bind(self, batch: CallSource, call: int) -> None:
        """The engine submitted the pending call as call ``call`` of ``batch``."""
        self._batch, self.call, self._pending = batch, call, None

    @property
    def job_id(self) -> str | None:
        """The scheduler's id of the array element running (or that ran) this call; before
        it starts, the element that will run it when that is known (``"4242_0"``), else the
        array job's id (``"4242"``); None while not yet submitted."""
        return None if self._batch is None else self._batch.job_id_of(self.call)

    @property
    def state(self) -> JobState:
        """Where this call stands (PENDING, RUNNING, then a final state)."""
        if self._batch is None:
            return JobState.CANCELLED if self.cancelled() else JobState.PENDING
        return self._batch.state_of(self.call)

    @property
    def batch(self) -> str:
        """The name of the batch (its folder in the work dir). A call still gathering in a
        burst of submits has none yet: asking for it submits the burst (as ``result()`` does)."""
        self._submit_pending()
        return "" if self._batch is None else self._batch.store.name

    def result(self, timeout: float | None = None) -> T:
        """As ``concurrent.futures``; a call still waiting for its burst of submits to end is
        submitted now (see :mod:`corral.engine.coalesce`)."""
        self._submit_pending()
        return super().result(timeout)

    def __await__(self) -> Generator[Any, None, T]:
        """``await future``: the call's value, or its own exception, in the awaiting coroutine.

        As ``asyncio.wrap_future`` (and ``loop.run_in_executor``) behave: the event loop is
        never blocked, waiting or submitting (a call still gathering in a burst of submits is
        submitted by the burst's pause, milliseconds later, off the loop); cancelling the
        awaiting task cancels the call if no element has taken it yet, and a call already
        running runs on, its value dropped (``cancel_job()`` stops it)."""
        import asyncio  # here: whoever awaits has imported it; the rest need not pay for it

        return asyncio.wrap_future(self).__await__()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """As ``concurrent.futures``; submits a pending call first, as :meth:`result` does."""
        self._submit_pending()
        return super().exception(timeout)

    def _submit_pending(self) -> None:
        pending = self._pending
        if pending is not None:
            pending.flush()

    def stdout(self) -> str:
        """What the call printed to stdout so far."""
        return self._stream("out")

    def stderr(self) -> str:
        """What the call printed to stderr so far."""
        return self._stream("err")

    def _stream(self, name: str) -> str:
        return "" if self._batch is None else self._batch.output(self.call, name)

    @property
    def progress(self) -> Progress | None:
        """Where the running call said it stands, with ``corral.progress(step, total,
        **metrics)`` on the node: the latest record (``step``, ``total``, ``metrics``, ``t``,
        the node's time), seen within one poll tick; None before its first."""
        return None if self._batch is None else self._batch.progress_of(self.call)

    def stop(self) -> bool:
        """Ask the running call to stop: ``corral.Stopped`` is raised in it at its next
        ``corral.progress()`` (or it may poll ``corral.should_stop()``), without touching the
        calls that share its job. False when the call is not running."""
        return self._batch is not None and self._batch.request_stop(self.call)

    def cancel(self) -> bool:
        """Cancel the call if it has not started; its job leaves the queue when no other call
        needs it. Returns False when it is running or done."""
        if self.done():
            return self.cancelled()
        pending = self._pending
        if pending is not None and pending.withdraw(self):
            return mark_cancelled(self)
        if self._batch is None or not self._batch.cancel_call(self.call):
            return False
        return mark_cancelled(self)

    def cancel_job(self) -> bool:
        """Cancel the array element that runs this call, with any call bundled with it (see
        ``JobRef.cancel``); False when the call had already finished."""
        return self._batch is not None and self._batch.cancel_element(self.call)

    @property
    def source(self) -> CallSource:
        """The engine's bookkeeping of this call's batch (what a dependency waits on)."""
        self._submit_pending()
        assert self._batch is not None, "a submitted call has a batch"
        return self._batch

    @property
    def bound_source(self) -> CallSource | None:
        """Its batch's bookkeeping, or None while the call still gathers in a burst of
        submits (unlike :attr:`source`, asking never submits the burst)."""
        return self._batch

    def hand_over(self, timeout: float | None = None) -> T:
        """``result(timeout)`` for a future only its caller sees (``Executor.map``'s), as
        ``concurrent.futures`` hands out map's results: the future is cancelled if it has not
        started (a time-out, Ctrl-C), and once its value is given, the future lets go of it,
        so that a result the user dropped is freed although the batch keeps its futures."""
        try:
            value = self.result(timeout)
        except BaseException:
            self.cancel()
            raise
        self._result = None  # it is done: nothing else writes it, and nobody else reads it
        return value

    def mark_running(self) -> None:
        """An element took the call: a pending future runs (one lock, on the engine's hot
        path; as ``set_running_or_notify_cancel`` for a future not cancelled nor done)."""
        with self._condition:
            if self._state == _PENDING:
                self._state = _RUNNING

    def __repr__(self) -> str:
        if self._batch is None:  # looking must not submit a burst that is still gathering
            return f"<CorralFuture gathering in a burst of submits state={self.state.name}>"
        return f"<CorralFuture call {self.call} of {self.batch} job={self.job_id} state={self.state.name}>"


class Futures(Sequence[CorralFuture]):
    """A batch's futures, one per call, each made when first asked for: a map of 100,000
    calls does not hold 100,000 futures (each with its lock and condition, a dozen objects
    for the garbage collector to walk): a call that ends before anyone asked for its future
    keeps only its value (:meth:`settle`), and the future whose value ``Executor.map`` handed
    over is let go (:meth:`hand_over`). A future made for a call an element has taken starts
    RUNNING, one for a call the client cancelled starts cancelled (``phase(call)`` says which:
    "taken", "cancelled" or anything else)."""

    def __init__(self, batch: CallSource, n: int, phase: Callable[[int], str]) -> None:
        self._batch, self._phase = batch, phase
        self._slots: list[CorralFuture | tuple[bool, Any] | None] = [None] * n
        self._lock = threading.Lock()

    @classmethod
    def of(cls, batch: CallSource, futures: list[CorralFuture], phase: Callable[[int], str]) -> Futures:
        """Futures that exist already (a burst of submits), bound to ``batch`` in order."""
        found = cls(batch, 0, phase)
        found._slots = list(futures)
        for call, future in enumerate(futures):
            future.bind(batch, call)
        return found

    def __len__(self) -> int:
        return len(self._slots)

    @overload
    def __getitem__(self, call: int) -> CorralFuture: ...
    @overload
    def __getitem__(self, call: slice) -> list[CorralFuture]: ...
    def __getitem__(self, call: int | slice) -> CorralFuture | list[CorralFuture]:
        if isinstance(call, slice):
            return [self[i] for i in range(*call.indices(len(self._slots)))]
        slot = self._slots[call]
        if isinstance(slot, CorralFuture):
            return slot
        with self._lock:
            slot = self._slots[call]
            if isinstance(slot, CorralFuture):
                return slot
            future = self._slots[call] = CorralFuture(self._batch, call)
            if slot is not None:  # it ended before anyone asked
                ok, value = slot
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
                return future
            phase = self._phase(call)
            if phase == "taken":
                future.mark_running()
            elif phase == "cancelled":
                mark_cancelled(future)
        return future

    def made(self, call: int) -> CorralFuture | None:
        """The call's future if it was made already (else None: it will be made as it is)."""
        slot = self._slots[call]
        return slot if isinstance(slot, CorralFuture) else None

    def settle(self, call: int, ok: bool, value: Any) -> CorralFuture | None:
        """The call ended with ``value`` (its exception unless ``ok``): kept for the future
        made when asked for, or, if it exists, returned for the caller to complete (outside
        the engine's lock: its callbacks may call the engine)."""
        with self._lock:
            slot = self._slots[call]
            if slot is None:
                self._slots[call] = (ok, value)
                return None
        return slot if isinstance(slot, CorralFuture) else None

    def settle_all(self, calls: Sequence[int], values: dict[int, Any]) -> list[CorralFuture]:
        """:meth:`settle` (ok) for each of ``calls``, under one lock; return the futures to
        complete, in order."""
        found: list[CorralFuture] = []
        slots = self._slots
        with self._lock:
            for call in calls:
                slot = slots[call]
                if slot is None:
                    slots[call] = (True, values[call])
                elif isinstance(slot, CorralFuture):
                    found.append(slot)
        return found

    def hand_over(self, call: int, timeout: float | None = None) -> Any:
        """:meth:`CorralFuture.hand_over` for a future only its caller sees, which the
        batch then lets go: asked for again, the call has a future that is done (its value
        not kept)."""
        value = self[call].hand_over(timeout)
        self._slots[call] = _HANDED
        return value

    def __iter__(self) -> Iterator[CorralFuture]:
        return (self[call] for call in range(len(self._slots)))


def _handed() -> CorralFuture:
    future = CorralFuture(None, -1)
    future.set_result(None)
    return future


#: Where a future handed to its caller was (see Futures.hand_over): done, holding nothing.
_HANDED = _handed()


def mark_cancelled(future: concurrent.futures.Future[Any]) -> bool:
    """Cancel a future and notify its waiters, as an executor must: ``wait`` and
    ``as_completed`` count a cancelled future as done only once notified. A future
    cancelled and notified already (made cancelled by :class:`Futures`) stays so."""
    if not concurrent.futures.Future.cancel(future):
        return False
    if future._state == _NOTIFIED:
        return True  # notifying again would log a CRITICAL "unexpected state" (and raise)
    with contextlib.suppress(RuntimeError):  # notified by another thread meanwhile
        future.set_running_or_notify_cancel()
    return True


def decode_outcome(outcome: Outcome, call: int, batch: str, path: str = "") -> tuple[bool, Any]:
    """(True, value) or (False, exception) for an outcome the worker wrote. An exception gets
    a note naming the call, its node and job, and the work dir ``path`` that keeps its logs."""
    where = f"call {call} of batch {batch!r}, on {outcome.host} (job {outcome.element})"
    if outcome.ok:
        try:
            return True, cloudpickle.loads(outcome.payload)
        except Exception as exc:  # noqa: BLE001 - the value exists but not here
            return False, RemoteError(type(exc).__name__, f"cannot unpickle the result of {where}: {exc}", "")
    exc_value: BaseException | None = None
    if outcome.payload:
        try:
            loaded = cloudpickle.loads(outcome.payload)
            exc_value = loaded if isinstance(loaded, BaseException) else None
        except Exception:  # noqa: BLE001 - fall back to the text below
            exc_value = None
    if exc_value is None:
        exc_value = _rebuilt(outcome) or RemoteError(outcome.type_name, outcome.message, outcome.traceback)
    exc_value.__cause__ = RemoteTraceback(outcome.traceback)
    if sys.version_info >= (3, 11):
        exc_value.add_note(f"(raised in {where}{'; its files are in ' + path if path else ''})")
    return False, exc_value


#: Exceptions of the standard library that the client can rebuild from their type name and
#: message when the worker could not send the exception itself: a result that could not be
#: pickled raises there what ``pickle`` raised (as ``ProcessPoolExecutor`` does), not a
#: RemoteError. The worker names them by ``type.__module__``, hence ``_pickle``.
_REBUILDABLE: dict[str, type[Exception]] = {
    "_pickle.PicklingError": pickle.PicklingError,
    "pickle.PicklingError": pickle.PicklingError,
    "builtins.TypeError": TypeError,
    "builtins.AttributeError": AttributeError,
    "builtins.RecursionError": RecursionError,
    "builtins.ValueError": ValueError,
    "builtins.NotImplementedError": NotImplementedError,
}


def _rebuilt(outcome: Outcome) -> Exception | None:
    """The exception an outcome without a payload names, when the client can make it; the
    message says what failed ("could not pickle the result: ...")."""
    kind = _REBUILDABLE.get(outcome.type_name)
    return kind(outcome.message) if kind is not None else None


def complete(completions: Sequence[tuple[concurrent.futures.Future[Any], bool, Any]]) -> None:
    """Set each future's result (``ok``) or exception, one lock per future; a future
    cancelled or done already is left as it is."""
    for future, ok, value in completions:
        try:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        except concurrent.futures.InvalidStateError:
            pass
