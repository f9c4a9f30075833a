"""The Pool front-end: ``multiprocessing.Pool`` on a cluster.

Changing ``from multiprocessing import Pool`` to ``from corral import Pool`` is the whole
change: each ``map``/``starmap``/``imap``/``apply`` becomes one batch for the engine, whose
futures this module reads. It never polls or submits on its own.

``processes`` is the most calls running at once, for the whole pool: its batches share one
:class:`~corral.engine.throttle.Throttle`, so the engine submits a later batch's elements only as
the earlier ones end; locally it is also the number of processes.
"""

from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Generic, TypeVar

from ..backends.base import Backend
from ..backends.local import LocalBackend
from ..engine.cluster import Cluster
from ..engine.futures import CorralFuture
from ..engine.request import Request
from ..engine.submitting import Call, refuse_unshareable
from ..engine.throttle import Throttle
from ..engine.tracking import BatchState
from ..resources import check_max_running
from .executor import WeakBatches, configure
from .hosts import open_cluster
from .node_setup import NodeSetup

T = TypeVar("T")


class AsyncResult(Generic[T]):
    """The result of ``apply_async``, ``map_async`` or ``starmap_async``, as in
    ``multiprocessing.pool.AsyncResult``: ``get``, ``wait``, ``ready``, ``successful``."""

    def __init__(
        self,
        futures: list[CorralFuture],
        single: bool,
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> None:
        self._futures = futures
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
        self._done.wait(timeout)

    def get(self, timeout: float | None = None) -> T:
        """The result (a list for maps). Raises the exception of the first failing call, in
        call order, or ``multiprocessing.TimeoutError`` after ``timeout`` seconds."""
        if not self._done.wait(timeout):
            raise multiprocessing.TimeoutError(f"not ready after {timeout} s")
        error = self._first_error()
        if error is not None:
            raise error
        result: T = self._value()
        return result


class IMapIterator:
    """The iterator of ``imap`` (in call order) and ``imap_unordered`` (as calls finish);
    ``next(timeout)`` as in multiprocessing."""

    def __init__(self, futures: list[CorralFuture], ordered: bool) -> None:
        self._futures = futures
        self._ordered = ordered
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
            raise StopIteration
        future: concurrent.futures.Future[Any]
        if self._ordered:
            future = self._futures[self._given]
            concurrent.futures.wait([future], timeout)
            if not future.done():
                raise multiprocessing.TimeoutError(f"no result within {timeout} s")
        else:
            try:
                future = self._finished.get(timeout=timeout)
            except queue.Empty:
                raise multiprocessing.TimeoutError(f"no result within {timeout} s") from None
        self._given += 1
        return future.result()


class Pool:
    """A ``multiprocessing.Pool`` whose workers are cluster jobs (or local processes).

    ``processes``: the most calls running at once (default: no limit on a cluster, the CPU
    count locally). ``initializer(*initargs)`` runs once in each process that runs calls (an
    array element), after the Python callables of ``setup``, as the node setup does (see
    :mod:`corral.worker.setup`: one that raises fails that element's calls with its exception).
    ``maxtasksperchild`` and ``context`` are accepted for compatibility and have no effect.
    ``backend``, ``directory``, ``profile``, ``host``, ``max_retries``, ``retry_on``,
    ``time_factor``, ``memory_factor``, resource keywords (``time``, ``memory``, ``cpus``, ...)
    and the job's environment (``setup``, ``env``, ``python``, ...) are as for
    :class:`corral.Executor`. Leaving a ``with`` block terminates the pool, as in
    multiprocessing: collect results inside it.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: object | None = None,
        *,
        backend: str | Backend | None = None,
        directory: str | None = None,
        profile: str | None = None,
        host: str | None = None,
        max_retries: int | None = None,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (),
        time_factor: float | None = None,
        memory_factor: float | None = None,
        cluster: Cluster | None = None,
        **resources: Any,
    ) -> None:
        if isinstance(processes, int) and not isinstance(processes, bool) and processes < 1:
            raise ValueError("Number of processes must be at least 1")  # multiprocessing's words
        processes = check_max_running(processes, "processes")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        initargs = tuple(initargs)
        for index, arg in enumerate(initargs):
            refuse_unshareable(arg, f"initargs[{index}]")
        resources, node = NodeSetup.take(resources)  # setup's callables run on the node
        if initializer is not None:  # multiprocessing's initializer is one more step of it
            node = node.and_then(functools.partial(initializer, *initargs))
        settings, self.retry = configure(
            backend, directory, profile, {**resources, "host": host},
            max_retries=max_retries, retry_on=retry_on, time_factor=time_factor, memory_factor=memory_factor,
        )  # fmt: skip
        self.resources = settings.resources
        self.environment = settings.environment
        self.submit_budget = settings.submit_budget
        self._owns_cluster = cluster is None and not isinstance(backend, Backend)
        if cluster is None:
            cluster = open_cluster(settings, backend)
            if isinstance(cluster.backend, LocalBackend) and processes is not None:
                cluster.backend.slots = processes
        self.cluster = cluster
        self.processes = processes
        self._node = node
        self._throttle = Throttle(processes) if processes is not None else None
        self._batches = WeakBatches()  # weak, as the Executor's
        self._lock = threading.Lock()
        self._state = "RUN"

    # -- multiprocessing.Pool's API ---------------------------------------------------------------

    def apply(
        self, func: Callable[..., T], args: Iterable[Any] = (), kwds: Mapping[str, Any] | None = None
    ) -> T:
        """``func(*args, **kwds)`` as a job; wait for its result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(
        self,
        func: Callable[..., T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] | None = None,
        callback: Callable[[T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[T]:
        """``func(*args, **kwds)`` as a job; return at once. Calls made one after another join
        one batch (see :mod:`corral.engine.coalesce`): a loop of ``apply_async`` costs what one
        ``map`` costs."""
        with self._lock:
            if self._state != "RUN":
                raise ValueError("Pool not running")
        template = self._request(func, [], None)
        future = self.cluster.gather((self, id(func)), template, (tuple(args), dict(kwds or {})), self._keep)
        return AsyncResult([future], True, callback, error_callback)

    def map(self, func: Callable[..., T], iterable: Iterable[Any], chunksize: int | None = None) -> list[T]:
        """``[func(x) for x in iterable]``, run as one batch; raises the first failing call's
        exception. ``chunksize`` fixes the calls per array element (default: corral packs)."""
        return self.map_async(func, iterable, chunksize).get()

    def map_async(
        self,
        func: Callable[..., T],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[list[T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[list[T]]:
        """``map`` without waiting."""
        futures = self._submit(func, [((x,), {}) for x in iterable], chunksize)
        return AsyncResult(futures, False, callback, error_callback)

    def starmap(
        self, func: Callable[..., T], iterable: Iterable[Iterable[Any]], chunksize: int | None = None
    ) -> list[T]:
        """``[func(*args) for args in iterable]``, run as one batch."""
        return self.starmap_async(func, iterable, chunksize).get()

    def starmap_async(
        self,
        func: Callable[..., T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[list[T]]:
        """``starmap`` without waiting."""
        futures = self._submit(func, [(tuple(args), {}) for args in iterable], chunksize)
        return AsyncResult(futures, False, callback, error_callback)

    def imap(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None
    ) -> IMapIterator:
        """Results in call order, each as soon as it and those before it are done. The
        iterable is read whole at once (it becomes one batch)."""
        return IMapIterator(self._submit(func, [((x,), {}) for x in iterable], chunksize), ordered=True)

    def imap_unordered(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None
    ) -> IMapIterator:
        """Results as calls finish, in any order."""
        return IMapIterator(self._submit(func, [((x,), {}) for x in iterable], chunksize), ordered=False)

    def close(self) -> None:
        """Accept no more work; what was submitted runs to the end."""
        with self._lock:
            if self._state == "RUN":
                self._state = "CLOSE"

    def terminate(self) -> None:
        """Cancel everything of this pool at once: nothing of it stays in the queue."""
        with self._lock:
            self._state = "TERMINATE"
        self.cluster.discard(self)
        with self._lock:
            batches = list(self._batches)
        self.cluster.cancel_batches(batches)
        if self._owns_cluster:
            self.cluster.close()

    def join(self) -> None:
        """Wait until every call submitted has finished; only after close() or terminate()."""
        with self._lock:
            if self._state == "RUN":
                raise ValueError("Pool is still running")
        self.cluster.flush(self)
        with self._lock:
            batches = list(self._batches)
        concurrent.futures.wait([f for b in batches for f in b.futures])

    def __enter__(self) -> Pool:
        with self._lock:
            if self._state != "RUN":  # as multiprocessing: a closed or terminated pool
                raise ValueError("Pool not running")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.terminate()

    def __repr__(self) -> str:
        backend = self.cluster.backend.name
        return f"<corral.Pool state={self._state} processes={self.processes} backend={backend}>"

    # -- to the engine -------------------------------------------------------------------------------

    def _submit(
        self, func: Callable[..., Any], calls: list[Call], chunksize: int | None
    ) -> list[CorralFuture]:
        with self._lock:
            if self._state != "RUN":
                raise ValueError("Pool not running")
        if not calls:
            return []
        self.cluster.flush(self)  # apply_async calls still gathering go first, in order
        batch = self.cluster.submit(self._request(func, calls, chunksize))
        self._keep(batch)
        return list(batch.futures)

    def _request(self, fn: Callable[..., Any], calls: list[Call], chunksize: int | None) -> Request:
        return Request(
            fn=self._node.wrap(fn, forward_logging=self.environment.forward_logging),
            calls=calls, resources=self.resources, chunksize=chunksize, max_running=self.processes,
            throttle=self._throttle, retry=self.retry, budget=self.submit_budget,
            what="map" if calls else "burst of apply_async", environment=self.environment,
        )  # fmt: skip

    def _keep(self, batch: BatchState) -> None:
        with self._lock:
            self._batches.append(batch)
