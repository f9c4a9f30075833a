"""Coalesced submits: ``[executor.submit(f, x) for x in data]`` is one batch, not N jobs.

The first thing a ``concurrent.futures`` user writes submits calls one at a time. Each
``submit`` (and a Pool's ``apply_async``) hands its call to a :class:`Pending` batch of its
front-end, function and settings and gets its future at once, unbound; the arguments are
pickled there and then, so that a bad one fails at its own line. The pending batch becomes
one :class:`~corral.engine.request.Request`, so one submission against the budget and as
few array jobs as one ``map`` makes, when the first of these happens:

* the burst pauses: no call joined it for :data:`PAUSE` seconds (the engine's poll loop
  watches the pending batches);
* someone needs an answer from one of its futures (``result()``, ``exception()``), or the
  front-end shuts down, or the interpreter exits;
* it holds :data:`MAX_CALLS` calls;
* the explicit block it was opened in ends (``with executor.batch():``), which never flushes
  before that.

A future cancelled while pending simply leaves the batch. A batch whose submission fails
(the budget, a scheduler's refusal) fails each of its futures with that error.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..store.pickling import Blobs
from .futures import CorralFuture, mark_cancelled
from .request import Request
from .submitting import Call, pickle_call, pickle_calls

#: A call's pickle, and the big values it refers to (by key; see corral.store.pickling).
Packed = tuple[bytes, dict[str, bytes]]

if TYPE_CHECKING:
    from .tracking import BatchState

log = logging.getLogger(__name__)

#: A burst of submits is over once no call joined it for this long (seconds). A loop that
#: only submits adds a call every few microseconds; pickling a large argument may take
#: longer, and then the burst is simply cut in two (each call is pickled before it joins).
PAUSE = 0.005
#: A pending batch larger than this is submitted at once, without waiting for the pause.
MAX_CALLS = 100_000


class Pending:
    """Calls of one function waiting to be submitted together as one request."""

    def __init__(
        self,
        template: Request,
        submit: Callable[[Request, list[CorralFuture]], BatchState],
        submitted: Callable[[BatchState], None],
        *,
        explicit: bool = False,
    ) -> None:
        self.template = template  # everything but the calls
        self.explicit = explicit  # opened by ``with executor.batch()``: flushed when it ends
        self._submit = submit
        self._submitted = submitted  # the front-end's hook: keep and watch the new batch
        self._lock = threading.Lock()
        self._payloads: list[bytes] = []
        self._futures: list[CorralFuture] = []
        self._blobs = Blobs()  # the calls' big values, each once
        self._function_checked = False
        self.last_add = time.monotonic()
        self.closed = False
        self.finished = threading.Event()  # set once flushed (or discarded) and handed over

    def pickle(self, call: Call) -> Packed:
        """``call`` pickled, with the big values it refers to (SerializationError here,
        naming the bad argument; the function too is checked, once)."""
        if not self._function_checked:
            pickle_calls(self.template.fn, [])  # the function too must fail at this line
            self._function_checked = True
        payload, keys = pickle_call(call, len(self._payloads), self._blobs)
        return payload, {key: self._blobs.data[key] for key in keys}

    def add(self, packed: Packed) -> CorralFuture | None:
        """Add a call pickled by :meth:`pickle` (maybe another batch's) and return its
        future, not yet bound to a batch; None when this batch was submitted meanwhile (the
        call then joins the next one: see :meth:`Coalescer.add`)."""
        payload, blobs = packed
        future = CorralFuture(None, -1, pending=self)
        with self._lock:
            if self.closed:
                return None
            for key, data in blobs.items():  # a call pickled for a batch that left without it
                self._blobs.data.setdefault(key, data)
            self._payloads.append(payload)
            self._futures.append(future)
            self.last_add = time.monotonic()
            full = len(self._futures) >= MAX_CALLS and not self.explicit
        if full:
            self.flush()
        return future

    def __len__(self) -> int:
        return len(self._futures)

    def withdraw(self, future: CorralFuture) -> bool:
        """Take a cancelled future's call out of the batch; False once it was submitted."""
        with self._lock:
            if self.closed:
                return False
            for index, candidate in enumerate(self._futures):
                if candidate is future:
                    del self._futures[index], self._payloads[index]
                    return True
        return False

    def discard(self) -> None:
        """Cancel every call gathered so far instead of submitting them."""
        with self._lock:
            closed, self.closed = self.closed, True
            futures, self._futures, self._payloads = self._futures, [], []
        for future in futures:
            mark_cancelled(future)
        if not closed:
            self.finished.set()

    def due(self, now: float) -> float | None:
        """When the pause will be over (None for an explicit batch, which waits for its
        block to end)."""
        return None if self.explicit else self.last_add + PAUSE

    def flush(self) -> None:
        """Submit the calls gathered so far (once; later calls go to a new pending batch).
        A failure to submit fails the futures, and is not raised here: the caller may be a
        user's ``result()`` or the poll loop."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            payloads, futures = self._payloads, self._futures
            self._payloads, self._futures = [], []
        try:
            if futures:
                self._send(payloads, futures)
        finally:
            self.finished.set()

    def _send(self, payloads: list[bytes], futures: list[CorralFuture]) -> None:
        try:
            request = replace(self.template, payloads=tuple(payloads), blobs=self._blobs.data)
            batch = self._submit(request, futures)
        except BaseException as exc:
            log.debug("could not submit a pending batch of %d calls: %s", len(futures), exc)
            for future in futures:
                if future.set_running_or_notify_cancel():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._submitted(batch)


class Coalescer:
    """The pending batches of one engine, by the key their front-end chose."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake  # tell the poll loop that a new pause is to be watched
        self._lock = threading.Lock()
        self._pending: dict[Any, Pending] = {}
        self._flying: list[tuple[Any, Pending]] = []  # taken by the poll loop, being submitted
        _coalescers.add(self)

    def add(self, key: Any, make: Callable[[], Pending], call: Call) -> CorralFuture:
        """Add ``call`` to the open pending batch for ``key`` (made by ``make`` when there is
        none) and return its future."""
        packed: Packed | None = None
        while True:  # the batch found may be submitted by the poll loop before the call joins
            pending = self._join(key, make)
            # Pickled once, before it joins: a large argument takes longer than a burst's
            # pause, and the batch it was to join would be submitted without it, every time.
            packed = pending.pickle(call) if packed is None else packed
            future = pending.add(packed)
            if future is not None:
                return future

    def _join(self, key: Any, make: Callable[[], Pending]) -> Pending:
        """The open pending batch for ``key``, made by ``make`` when there is none."""
        with self._lock:
            pending = self._pending.get(key)
            if pending is None or pending.closed:
                pending = self._pending[key] = make()
                fresh = True
            else:
                fresh = False
        if fresh:
            self._wake()
        return pending

    def detach(self, key: Any) -> Pending | None:
        """Take the pending batch of ``key`` out (an explicit block ends with it)."""
        with self._lock:
            return self._pending.pop(key, None)

    def next_due(self) -> float | None:
        """The earliest time a pending batch's pause ends; None when none waits for one."""
        with self._lock:
            dues = [d for p in self._pending.values() if (d := p.due(0.0)) is not None]
        return min(dues) if dues else None

    def flush_due(self, now: float) -> None:
        """Submit every pending batch whose burst has paused."""
        with self._lock:
            ready = [k for k, p in self._pending.items() if (d := p.due(now)) is not None and d <= now]
            batches = [(k, self._pending.pop(k)) for k in ready]
            self._flying += batches
        try:
            for _, pending in batches:
                pending.flush()
        finally:
            with self._lock:
                self._flying = [(k, p) for k, p in self._flying if not p.finished.is_set()]

    def flush_all(self, owner: Any = None) -> None:
        """Submit every pending batch now (of the front-end ``owner`` only, when given: keys
        are tuples whose first item is the front-end)."""
        for pending in self._take(owner):
            pending.flush()

    def discard_all(self, owner: Any) -> None:
        """Cancel the pending calls of the front-end ``owner`` instead of submitting them."""
        for pending in self._take(owner):
            pending.discard()

    def _take(self, owner: Any) -> list[Pending]:
        """The open pending batches of ``owner``, taken out, after waiting for those of its
        that another thread (the poll loop) is submitting right now: when this returns,
        every batch of ``owner`` submitted so far has reached the front-end."""
        with self._lock:
            keys = [k for k in self._pending if owner is None or (isinstance(k, tuple) and k[0] is owner)]
            taken = [self._pending.pop(k) for k in keys]
            flying = [p for k, p in self._flying if owner is None or (isinstance(k, tuple) and k[0] is owner)]
        for pending in flying:
            pending.finished.wait()
        return taken

    def __bool__(self) -> bool:
        return bool(self._pending)


_coalescers: weakref.WeakSet[Coalescer] = weakref.WeakSet()


def flush_everywhere() -> None:
    """Submit every pending batch of this process (the interpreter is exiting)."""
    for coalescer in list(_coalescers):
        coalescer.flush_all()
