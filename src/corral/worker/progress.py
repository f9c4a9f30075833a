"""Progress and stop, per call, on the node: ``corral.progress()``, ``corral.should_stop()``,
``corral.Stopped``.

Inside a call the worker runs, :func:`progress` appends a Progress record to the element's
stream (one ``os.write``; the client sees the latest per call within a poll tick) and then
looks whether the client asked this call to stop (``stops/<call>.<attempt>``, see
:meth:`corral.store.batch.BatchStore.request_stop`): if so it raises :class:`Stopped`, which
ends the call like any exception, so the client's future raises it. Only the running call
stops; the calls packed beside it in the element run on. Outside a corral job both are
no-ops.

The running call is found through a context variable the worker sets around each call:
threads a call starts see it only when started in a copy of its context
(``contextvars.copy_context().run``).
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..store.stream_codec import Metric, Progress

if TYPE_CHECKING:
    from ..store.batch import BatchStore


class Writes(Protocol):
    """Where a call's progress records go: the element's log (after the results it holds)."""

    def write(self, record: Progress) -> None: ...


#: How often, at most, a running call looks for its stop request (one stat each time).
STOP_CHECK = 0.2
_METRIC_TYPES = (bool, int, float, str)  # bool first: it is an int too


class Stopped(Exception):
    """The client asked this call to stop (``future.stop()``); raised by :func:`progress`.
    Catch it to clean up, and let it propagate (or raise it again) to end the call."""


@dataclass
class _Running:
    """The call running in this context, and what it knows of its stop request."""

    writer: Writes
    store: BatchStore
    call: int
    attempt: int
    checked: float = float("-inf")  # time.monotonic() of the last look
    stopped: bool = False


_running: contextvars.ContextVar[_Running | None] = contextvars.ContextVar(
    "corral_running_call", default=None
)
CallToken = contextvars.Token["_Running | None"]


def enter_call(writer: Writes, store: BatchStore, call: int, attempt: int) -> CallToken:
    """Before one call run by the worker: :func:`progress` and :func:`should_stop` act on it
    until :func:`leave_call` (a pair of functions, not a context manager: it is per call)."""
    return _running.set(_Running(writer, store, call, attempt))


def leave_call(token: CallToken) -> None:
    """After the call :func:`enter_call` returned ``token`` for."""
    _running.reset(token)


def running_call() -> tuple[int, int] | None:
    """``(call, attempt)`` of the call corral runs in this context; None outside one."""
    running = _running.get()
    return None if running is None else (running.call, running.attempt)


def _number(value: object, name: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"progress() {name} must be a number, not {type(value).__name__}")
    return float(value) if isinstance(value, float) else int(value)


def _metric(key: str, value: object) -> Metric:
    if value is None:
        return None
    for kind in _METRIC_TYPES:
        if isinstance(value, kind):
            return kind(value)  # a subclass (numpy's float64) as the plain type the record holds
    raise TypeError(
        f"progress() metric {key!r} must be an int, float, str, bool or None, not {type(value).__name__}"
    )


def progress(step: float, total: float | None = None, **metrics: object) -> None:
    """Record where the running call is: ``step`` (of ``total``, if known) and any
    ``metrics`` (int, float, str, bool or None values: TypeError for others, naming the
    key). Raises :class:`Stopped` when the client asked this call to stop. Does nothing
    outside a call run by corral."""
    running = _running.get()
    if running is None:
        return
    record = Progress(
        call=running.call,
        attempt=running.attempt,
        step=_number(step, "step"),
        total=None if total is None else _number(total, "total"),
        metrics={key: _metric(key, value) for key, value in metrics.items()},
        t=time.time(),
    )
    running.writer.write(record)  # ValueError for a number that is not finite
    if should_stop():
        raise Stopped(f"call {running.call} was asked to stop")


def should_stop() -> bool:
    """True once the client asked the running call to stop (looked up at most every
    :data:`STOP_CHECK` seconds; once seen, always True). False outside a call run by corral."""
    running = _running.get()
    if running is None:
        return False
    if running.stopped:
        return True
    now = time.monotonic()
    if now - running.checked >= STOP_CHECK:
        running.checked = now
        running.stopped = running.store.stop_requested(running.call, running.attempt)
    return running.stopped
