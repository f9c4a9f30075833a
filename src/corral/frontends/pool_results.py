"""What the Pool's asynchronous calls return: :class:`AsyncResult` (``apply_async``,
``map_async``, ``starmap_async``) and :class:`IMapIterator` (``imap``, ``imap_unordered``), as
``multiprocessing.pool`` has them. Waiting on one of a map draws the progress bar (see
:mod:`corral.frontends.progress_bar`); a single call's never does.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ..engine.futures import CorralFuture
from ..engine.tally import Tally
from .progress_bar import ProgressBar

T = TypeVar("T")


class Shown:
    """The bar of one map's results: made when they are first awaited, closed when all are in."""

    def __init__(self, futures: list[CorralFuture], label: str, progress: bool | None) -> None:
        self._futures, self._label, self._progress = futures, label, progress
        self._bar: ProgressBar | None = None

    @property
    def bar(self) -> ProgressBar:
        if self._bar is None:
            self._bar = ProgressBar(
                self._label, len(self._futures), Tally(futures=self._futures).counts, self._progress
            )
        return self._bar

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class AsyncResult(Generic[T]):
    """The result of ``apply_async``, ``map_async`` or ``starmap_async``, as in
    ``multiprocessing.pool.AsyncResult``: ``get``, ``wait``, ``ready``, ``successful``."""

    def __init__(
        self,
        futures: list[CorralFuture],
        single: bool,
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        shown: Shown | None = None,
    ) -> None:
        self._futures = futures
        self._shown = shown  # a map's bar (None: a single call's, or none wanted)
        self._single = single
        self._done = threading.Event()
        self._left = len(futures)
        self._lock = threading.Lock()
        self._callbacks = callback, error_callback
        if not futures:
            self._finish()
        for future in futures:
            future.add_done_callback(self._one_done)

    def _one_done(self, _: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._finish()

    def _finish(self) -> None:
        """Run the callback, then mark the result ready (so that ``get`` returning means the
        callback has run, as in multiprocessing). Callbacks get a thread of their own: one
        that blocks, or waits on this pool, must not stall corral's poll loop."""
        callback, error_callback = self._callbacks
        if callback is None and error_callback is None:
            self._done.set()
        else:
            threading.Thread(target=self._call_back, name="corral-pool-callback", daemon=True).start()

    def _call_back(self) -> None:
        callback, error_callback = self._callbacks
        error = self._first_error()
        try:
            if error is None and callback is not None:
                callback(self._value())
            elif error is not None and error_callback is not None:
                error_callback(error)
        finally:
            self._done.set()

    def _first_error(self) -> BaseException | None:
        for future in self._futures:
            if future.cancelled():
                return concurrent.futures.CancelledError(f"call {future.call} was cancelled")
            error = future.exception()
            if error is not None:
                return error
        return None

    def _value(self) -> Any:
        values = [f.result() for f in self._futures]
        return values[0] if self._single else values

    def ready(self) -> bool:
        """True once every call has finished (successfully or not)."""
        return self._done.is_set()

    def successful(self) -> bool:
        """True when every call succeeded; ValueError while not ready, as in multiprocessing."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._first_error() is None

    def wait(self, timeout: float | None = None) -> None:
        """Wait until ready, or ``timeout`` seconds."""
        self._wait(timeout)

    def _wait(self, timeout: float | None) -> bool:
        shown = self._shown
        if shown is None or not shown.bar.active:
            return self._done.wait(timeout)
        if not shown.bar.wait_until(self._done.wait, timeout):
            return False
        shown.close()
        return True

    def get(self, timeout: float | None = None) -> T:
        """The result (a list for maps). Raises the exception of the first failing call, in
        call order, or ``multiprocessing.TimeoutError`` after ``timeout`` seconds."""
        if not self._wait(timeout):
            raise multiprocessing.TimeoutError(f"not ready after {timeout} s")
        error = self._first_error()
        if error is not None:
            raise error
        result: T = self._value()
        return result


class IMapIterator:
    """The iterator of ``imap`` (in call order) and ``imap_unordered`` (as calls finish);
    ``next(timeout)`` as in multiprocessing."""

    def __init__(self, futures: list[CorralFuture], ordered: bool, shown: Shown | None = None) -> None:
        self._futures = futures
        self._ordered = ordered
        self._shown = shown
        self._given = 0
        self._finished: queue.SimpleQueue[concurrent.futures.Future[Any]] = queue.SimpleQueue()
        if not ordered:
            for future in futures:
                future.add_done_callback(self._finished.put)

    def __iter__(self) -> IMapIterator:
        return self

    def __next__(self) -> Any:
        return self.next()

    def next(self, timeout: float | None = None) -> Any:
        """The next result; raises that call's exception, or ``multiprocessing.TimeoutError``."""
        if self._given >= len(self._futures):
            if self._shown is not None:
                self._shown.close()
            raise StopIteration
        bar = None if self._shown is None or not self._shown.bar.active else self._shown.bar
        future: concurrent.futures.Future[Any] | None
        if self._ordered:
            future = self._futures[self._given]
            if bar is not None:
                bar.wait(future, timeout)
            concurrent.futures.wait([future], 0 if bar is not None else timeout)
            if not future.done():
                raise multiprocessing.TimeoutError(f"no result within {timeout} s")
        else:
            future = self._next_finished(bar, timeout)
            if future is None:
                raise multiprocessing.TimeoutError(f"no result within {timeout} s")
        self._given += 1
        return future.result()

    def _next_finished(
        self, bar: ProgressBar | None, timeout: float | None
    ) -> concurrent.futures.Future[Any] | None:
        if bar is None:
            return self._take(timeout)
        return bar.wait_until(self._take, timeout)

    def _take(self, timeout: float | None) -> concurrent.futures.Future[Any] | None:
        """The next future to finish, or None after ``timeout`` seconds."""
        try:
            return self._finished.get(timeout=timeout)
        except queue.Empty:
            return None
