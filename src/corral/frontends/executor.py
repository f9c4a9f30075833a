"""The Executor front-end: ``concurrent.futures`` on a cluster.

A thin layer: it turns calls into requests for the engine (:class:`~corral.engine.cluster.Cluster`)
and hands back its futures. ``map`` is one batch; consecutive ``submit`` calls of one function
join one batch too, submitted when the burst pauses or an answer is wanted (see
:mod:`corral.engine.coalesce`), and ``with executor.batch():`` makes that explicit.
``max_workers`` (or ``max_running``) limits the whole executor, as in ``concurrent.futures``:
its batches share one :class:`~corral.engine.throttle.Throttle`, which the engine keeps to. What a
script that ends without waiting does is in :mod:`corral.frontends.exiting`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from ..backends.base import Backend, Submission
from ..config import Settings, resolve
from ..engine.cluster import Cluster
from ..engine.futures import CorralFuture
from ..engine.request import Request
from ..engine.submitting import Call
from ..engine.tally import Tally
from ..engine.throttle import Throttle
from ..engine.tracking import BatchState
from ..errors import ResourceError
from ..resources import check_max_running
from ..retry import RetryPolicy
from . import exiting
from .hosts import open_cluster
from .node_setup import NodeSetup
from .progress_bar import ProgressBar, check_showing, echo_line, wanted
from .retention import Retention

P = ParamSpec("P")
T = TypeVar("T")


class Executor(concurrent.futures.Executor):
    """Run calls as jobs on a cluster, or locally, behind the ``concurrent.futures`` API.

    ``backend`` is ``"auto"`` (SLURM when a controller answers, else Grid Engine when a
    qmaster answers, else local), ``"slurm"``, ``"sge"``, ``"local"`` (alias
    ``"multiprocessing"``), ``"sequential"``, or a Backend instance.
    ``directory`` is the work dir (default ``$CORRAL_DIR`` or ``./.corral``). Resource
    keywords (``time``, ``cpus``, ``memory``, ``gpus``, ``partition``, ``extra={...}``, ...)
    apply to every job; an unknown or malformed one raises ResourceError right here, and so
    do the job's environment keywords (``setup``, ``env``, ``python``, ``post``, ``srun``,
    ``launcher``, ``per_task``, ``forward_logging``: see :mod:`corral.environment`); ``setup``
    may also hold Python callables, run once per element before its first call (see
    :mod:`corral.worker.setup`), and the client's logging level and format reach the calls
    unless ``forward_logging=False``. What is not given here comes
    from the configuration, with ``profile`` if named (see :mod:`corral.config`; the backend
    is ``"auto"`` when nothing sets it). ``host`` names a configured host: the jobs go to its
    scheduler over SSH (see :mod:`corral.frontends.hosts`), checked before anything is written.

    ``progress``: the progress bar of ``map`` and ``corral.as_completed`` (None: on a terminal;
    see :mod:`corral.frontends.progress_bar`). ``echo=True`` shows the lines the calls print
    as they arrive (see :mod:`corral.engine.echo`). ``keep`` ("all", "failed" or "none") says
    which batch folders stay once ``shutdown(wait=True)`` has the results (see
    :mod:`corral.frontends.retention`).

    A call whose job died of something that is not its fault (node failure, preemption, a
    job lost by the scheduler) is resubmitted, up to ``max_retries`` times. Its own exception
    is retried only when its type is in ``retry_on``; a time limit or out-of-memory only when
    ``time_factor`` or ``memory_factor`` say how much more to ask for (see :mod:`corral.retry`).

    ``max_workers`` (or its other name, ``max_running``) is the most calls of this executor
    live at once, whatever the number of ``submit`` and ``map`` calls: later submissions wait
    in the engine until earlier elements end. Default: no limit on a cluster, the CPU count
    locally.

    Leaving a ``with`` block on an exception (Ctrl-C included) cancels the executor's jobs. A
    script that ends without waiting (or after ``shutdown(wait=False)``) waits at exit for its
    local calls, and on a cluster until every call is submitted (see :mod:`corral.frontends.exiting`).
    """

    def __init__(
        self,
        backend: str | Backend | None = None,
        directory: str | None = None,
        *,
        profile: str | None = None,
        host: str | None = None,
        max_workers: int | None = None,
        max_running: int | None = None,
        allow_nested: bool = False,
        max_retries: int | None = None,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (),
        time_factor: float | None = None,
        memory_factor: float | None = None,
        cluster: Cluster | None = None,
        progress: bool | None = None,
        echo: bool = False,
        keep: str | None = None,
        **resources: Any,
    ) -> None:
        resources, self._node = NodeSetup.take(resources)  # setup's callables run on the node
        settings, self.retry = configure(
            backend, directory, profile, {**resources, "host": host, "keep": keep},
            max_retries=max_retries, retry_on=retry_on, time_factor=time_factor, memory_factor=memory_factor,
        )  # fmt: skip
        self.resources = settings.resources
        self.environment = settings.environment
        self.submit_budget = settings.submit_budget
        max_running = limit_of(max_workers=max_workers, max_running=max_running)
        self.cluster = cluster or open_cluster(settings, backend)
        self.max_running = max_running
        self.allow_nested = allow_nested
        check_showing(progress, echo)
        self.progress, self.echo = progress, echo
        self._retention = Retention(settings.keep or "all")  # see corral.frontends.retention
        self.keep = self._retention.keep
        self._throttle = Throttle(max_running) if max_running is not None else None
        self._batches = WeakBatches()
        self._lock = threading.Lock()
        self._shutdown = False
        self._block: list[Any] | None = None  # the keys gathered by an open ``batch()`` block

    @property
    def max_workers(self) -> int | None:
        """The most calls of this executor live at once (None: no limit of its own)."""
        return self.max_running

    @property
    def backend(self) -> str:
        """The name of the backend in use (``auto`` resolved)."""
        return self.cluster.backend.name

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> CorralFuture[T]:
        """Run ``fn(*args, **kwargs)`` as a job; return its future at once.

        Calls submitted one after another (``[ex.submit(f, x) for x in data]``) join one
        batch, submitted as one array when the loop pauses for a few milliseconds, when a
        result is asked for, or at ``shutdown``: a loop of submits costs what one ``map``
        costs. A bad argument raises here, at its own line."""
        self._check_open()
        with self._lock:
            block = self._block
            key = (self, id(fn), block is not None)
            if block is not None and key not in block:
                block.append(key)
        template = self._request(fn, [], None)
        exiting.expect()
        return self.cluster.gather(key, template, (args, kwargs), self._keep, explicit=block is not None)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Submit the calls of the ``with`` block together when it ends: one batch (one array)
        per function, however long the block takes. If the block raises, its calls are
        cancelled, never submitted."""
        with self._lock:
            if self._block is not None:
                raise RuntimeError("this executor's batch() block is already open")
            keys: list[Any] = []
            self._block = keys
        try:
            yield
        except BaseException:
            self._end_block(keys, submit=False)
            raise
        self._end_block(keys, submit=True)

    def _end_block(self, keys: list[Any], *, submit: bool) -> None:
        with self._lock:
            self._block = None
        for key in keys:
            self.cluster.end_gathering(key, submit=submit)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        progress: bool | None = None,
    ) -> Iterator[T]:
        """Run ``fn`` over the iterables as ONE batch; yield results in order.

        ``chunksize`` fixes the calls per array element; by default corral packs them itself
        (elements pull calls until none are left). ``timeout`` counts from this call, as in
        ``concurrent.futures``; the first failing call's exception is raised when reached.
        While results are awaited, a progress bar shows how the calls stand (see
        :mod:`corral.frontends.progress_bar`); ``progress`` overrides the executor's.
        """
        shown = self.progress if progress is None else progress
        wanted(shown)  # a bad value fails before anything is submitted
        end = None if timeout is None else time.monotonic() + timeout
        calls: list[Call] = [(args, {}) for args in zip(*iterables)]  # noqa: B905 - map stops at the shortest, as the builtin does
        batch = self._submit_batch(fn, calls, chunksize)
        if batch is None:
            return iter(())
        futures = batch.futures  # each made as it is needed, and let go once handed over

        def results() -> Iterator[T]:
            # As concurrent.futures does: the future waited for is cancelled with the rest on
            # a time-out or Ctrl-C, and no yielded result is kept here (see hand_over).
            bar = ProgressBar(batch.name, len(futures), Tally([batch]).counts, shown)
            try:
                for call in range(len(futures)):
                    if bar.active:
                        bar.wait(futures[call], None if end is None else end - time.monotonic())
                    yield futures.hand_over(call, None if end is None else end - time.monotonic())
            finally:  # calls before the one waited for are done: the rest is what no element took
                batch.cancel_unclaimed()
                bar.close()

        return results()

    def preview(self, *, calls: int = 1, chunksize: int | None = None) -> Submission:
        """The exact job script and submit command a batch of ``calls`` calls would use."""
        return self.cluster.preview(
            self.resources, calls=calls, chunksize=chunksize, max_running=self.max_running,
            environment=self.environment,
        )  # fmt: skip

    def _submit(self, fn: Callable[..., Any], calls: list[Call], chunksize: int | None) -> list[CorralFuture]:
        batch = self._submit_batch(fn, calls, chunksize)
        return [] if batch is None else list(batch.futures)

    def _submit_batch(
        self, fn: Callable[..., Any], calls: list[Call], chunksize: int | None
    ) -> BatchState | None:
        """``calls`` as one batch of this executor (None for no calls), after the calls still
        gathering in a burst of submits."""
        self._check_open()
        if not calls:
            return None
        self._flush_burst()
        batch = self.cluster.submit(self._request(fn, calls, chunksize))
        self._keep(batch)
        return batch

    def _flush_burst(self) -> None:
        """Submit the calls still gathering in a burst of submits before a new batch, so that
        the scheduler (and ``max_workers``) sees the calls in the order they were made; inside
        ``with executor.batch():`` the block's calls wait for its end, as it promises."""
        with self._lock:
            explicit = self._block is not None
        if not explicit:
            self.cluster.flush(self)

    def _check_open(self) -> None:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
        exiting.check_open()

    def _keep(self, batch: BatchState) -> None:
        """A batch of this executor was submitted: keep it (weakly), and the process alive
        at exit while it needs it."""
        with self._lock:
            self._batches.append(batch)
        self._retention.add(batch)
        exiting.watch(self.cluster, batch)

    def on_node(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` as the nodes run it: after the ``setup`` callables and with the client's
        logging (see :mod:`corral.frontends.node_setup`); ``fn`` itself when there is neither."""
        return self._node.wrap(fn, forward_logging=self.environment.forward_logging)

    def _request(self, fn: Callable[..., Any], calls: list[Call], chunksize: int | None) -> Request:
        return Request(
            fn=self.on_node(fn),
            calls=calls, resources=self.resources, chunksize=chunksize, max_running=self.max_running,
            throttle=self._throttle, retry=self.retry, allow_nested=self.allow_nested,
            budget=self.submit_budget, what="map" if calls else "burst of submits",
            environment=self.environment, echo=echo_line if self.echo else None,
        )  # fmt: skip

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more calls; with ``cancel_futures``, cancel calls not yet started; with
        ``wait``, return when every call has finished."""
        with self._lock:
            self._shutdown = True
        if cancel_futures:
            self.cluster.discard(self)  # calls still gathering are never submitted
        self.cluster.flush(self)
        with self._lock:
            batches = list(self._batches)
        futures = [f for b in batches for f in b.futures]
        del batches
        if cancel_futures:
            for future in futures:
                future.cancel()
        if wait:
            concurrent.futures.wait(futures)
            del futures
            self._retention.retire(self.cluster)  # the results are in: keep what keep says

    def cancel_all(self) -> None:
        """Cancel every call of this executor: pending ones never start, running jobs are
        cancelled in the scheduler (their futures raise JobCancelledError)."""
        self.cluster.discard(self)
        with self._lock:
            batches = list(self._batches)
        self.cluster.cancel_batches(batches)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if exc_type is None:
            try:
                self.shutdown(wait=True)
                return None
            except BaseException:  # Ctrl-C while waiting at the end of the block
                self._abandon()
                raise
        self._abandon()
        return None

    def _abandon(self) -> None:
        """Leave on an error: cancel every job, and wait for none."""
        self.cancel_all()
        self.shutdown(wait=False)


class WeakBatches:
    """The batches of an executor or pool, in the order they came, held weakly: the engine
    keeps a batch alive while it is live; once it is done, only the user's futures keep it,
    so that results the user dropped are freed (as ``concurrent.futures`` frees them)."""

    def __init__(self) -> None:
        self._refs: list[weakref.ref[BatchState]] = []
        self._kept = 8  # references left after the last sweep (at least 8)

    def append(self, batch: BatchState) -> None:
        if len(self._refs) >= 2 * self._kept:  # dead references go when the list has doubled
            self._refs = [r for r in self._refs if r() is not None]
            self._kept = max(8, len(self._refs))
        self._refs.append(weakref.ref(batch))

    def _alive(self) -> list[BatchState]:
        return [b for r in self._refs if (b := r()) is not None]

    def __iter__(self) -> Iterator[BatchState]:
        return iter(self._alive())

    def __len__(self) -> int:
        return len(self._alive())

    def __getitem__(self, index: int) -> BatchState:
        return self._alive()[index]


def limit_of(*, max_workers: object = None, max_running: object = None) -> int | None:
    """The executor's limit from ``max_workers`` or ``max_running`` (one name each for the
    same thing: ``concurrent.futures``'s and corral's); ResourceError for both, or a value
    that is not a whole number of at least 1."""
    if max_workers is not None and max_running is not None:
        raise ResourceError(
            f"max_workers={max_workers!r} and max_running={max_running!r}: these are two names "
            "of the same limit (the most calls of this executor at once); give one"
        )
    if max_workers is not None:
        return check_max_running(max_workers, "max_workers")
    return check_max_running(max_running)


def configure(
    backend: str | Backend | None,
    directory: str | None,
    profile: str | None,
    resources: dict[str, Any],
    *,
    max_retries: int | None,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    time_factor: float | None,
    memory_factor: float | None,
) -> tuple[Settings, RetryPolicy]:
    """What an Executor or a Pool takes from its keywords and the configuration: the merged
    settings (see :mod:`corral.config`) and the retry policy."""
    named = backend if isinstance(backend, str) else None
    settings = resolve(profile, backend=named, directory=directory, max_retries=max_retries, **resources)
    return settings, RetryPolicy(settings.max_retries, retry_on, time_factor, memory_factor)


def get_executor(name: str = "auto", **options: Any) -> Executor:
    """An executor for a backend by name: ``slurm``, ``sge``, ``local``, ``sequential``,
    ``steps`` (job steps of the current allocation), ``auto``, or ``multiprocessing`` (another
    name for ``local``). ``options`` go to :class:`Executor`."""
    return Executor(backend=name, **options)
