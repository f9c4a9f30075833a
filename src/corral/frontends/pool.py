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
import threading
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

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
from .pool_results import AsyncResult, IMapIterator, Shown
from .progress_bar import check_showing, echo_line
from .retention import Retention

T = TypeVar("T")


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
    multiprocessing: collect results inside it. Waiting for a map draws a progress bar on a
    terminal (``progress``); the lines the calls print reach this process as they run
    (``echo``, on by default, as multiprocessing shows them); a batch folder whose calls all
    succeeded is removed at ``join()`` or ``terminate()`` (``keep="failed"``, the default;
    ``"all"`` keeps them, ``"none"`` keeps none).
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
        progress: bool | None = None,
        echo: bool = True,
        keep: str | None = None,
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
            backend, directory, profile, {**resources, "host": host, "keep": keep},
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
        check_showing(progress, echo)
        self.progress, self.echo = progress, echo
        self._retention = Retention(settings.keep or "failed")  # see corral.frontends.retention
        self.keep = self._retention.keep

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
        return AsyncResult(futures, False, callback, error_callback, self._shown(func, futures))

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
        return AsyncResult(futures, False, callback, error_callback, self._shown(func, futures))

    def imap(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None
    ) -> IMapIterator:
        """Results in call order, each as soon as it and those before it are done. The
        iterable is read whole at once (it becomes one batch)."""
        futures = self._submit(func, [((x,), {}) for x in iterable], chunksize)
        return IMapIterator(futures, True, self._shown(func, futures))

    def imap_unordered(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None
    ) -> IMapIterator:
        """Results as calls finish, in any order."""
        futures = self._submit(func, [((x,), {}) for x in iterable], chunksize)
        return IMapIterator(futures, False, self._shown(func, futures))

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
        self._retention.retire(self.cluster)  # what ended, as keep says; the rest stays
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
        self._retention.retire(self.cluster)

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

    def _shown(self, func: Callable[..., Any], futures: list[CorralFuture]) -> Shown:
        return Shown(futures, getattr(func, "__name__", "map"), self.progress)

    def _request(self, fn: Callable[..., Any], calls: list[Call], chunksize: int | None) -> Request:
        return Request(
            fn=self._node.wrap(fn, forward_logging=self.environment.forward_logging),
            calls=calls, resources=self.resources, chunksize=chunksize, max_running=self.processes,
            throttle=self._throttle, retry=self.retry, budget=self.submit_budget,
            what="map" if calls else "burst of apply_async", environment=self.environment,
            echo=echo_line if self.echo else None,
        )  # fmt: skip

    def _keep(self, batch: BatchState) -> None:
        with self._lock:
            self._batches.append(batch)
        self._retention.add(batch)
