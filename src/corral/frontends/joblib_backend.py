"""The ``"corral"`` backend of joblib: ``joblib.Parallel`` (and scikit-learn's ``n_jobs``) on a cluster.

How joblib's calls reach the engine::

    Parallel.__call__ ── configure(n_jobs)       one Executor per Parallel, max_running from n_jobs
         │               start_call()            opens executor.batch()
         │  _start: every task, in BatchedCalls  submit() -> executor.submit(joblib_batch, batch)
         │  retrieval_context()                  closes the block: ONE batch, one array, submitted
         │  _retrieve: waits on the callbacks    a future done -> joblib's callback -> result()
         └─ stop_call() / terminate()            the executor is let go (the engine stays)

Why each choice:

* **One burst, one batch.** joblib hands a process pool ``2 * n_jobs`` tasks, then one more
  batch per finished batch; on a cluster each trickle of batches would be its own array job
  (a job costs about 0.3 s of the scheduler's work). :meth:`CorralBackend.configure` sets the
  Parallel's ``pre_dispatch`` to ``"all"``, and the calls dispatched in ``_start`` are
  gathered in an explicit ``executor.batch()`` block, submitted when joblib starts waiting: a
  Parallel call is one batch (one ``sbatch``), however long pickling its tasks took. The
  engine packs the batch into elements that pull calls, as many as ``max_running`` or the
  free slots allow, so the number of jobs does not follow the number of joblib batches.
* **Batches of growing size.** A joblib batch (``BatchedCalls``) is one corral call. joblib's
  auto-batching times batches from dispatch to completion, which on a cluster measures the
  queue, not the work; instead the size grows with the tasks already dispatched
  (:func:`batch_size`): the first ``GROWTH x n_jobs`` tasks go one per call, so that short
  maps (a grid search) spread over every slot, and a map of a million tiny tasks does not
  become a million calls. ``Parallel(batch_size=k)`` still fixes it.
* **n_jobs.** ``-1`` means as many calls at once as corral would run: ``max_running`` when
  given, else the slots the backend reports for these resources (the CPUs of this machine on
  the local backend, the CPUs of the partition's nodes on SLURM); ``-2`` one fewer, as in
  joblib. A positive ``n_jobs`` is a limit too (capped by ``max_running``). ``n_jobs=1`` runs
  in this process, as joblib always does; any other limit, even one slot, runs on the cluster
  (joblib would run a reported 1 in this process, so at least 2 is reported).
* **Failures.** A task's own exception comes back through joblib with its type and the
  node's traceback as ``__cause__``; joblib then aborts, and :meth:`abort_everything` cancels
  the Parallel's calls that are still queued or running.
* **Nesting.** Inside a corral job the backend does not submit: it falls back to joblib's
  threads (one per CPU of the job), as joblib does for nested process pools, unless
  ``allow_nested=True``. Tasks themselves run under joblib's default nested backend (threads,
  then sequential), which joblib sends along with each batch.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from joblib import register_parallel_backend
from joblib._parallel_backends import (
    FallbackToBackend,
    ParallelBackendBase,
    SequentialBackend,
    ThreadingBackend,
)

from ..backends.base import Backend
from ..engine.cluster import Cluster
from ..engine.futures import CorralFuture
from ..errors import ResourceError
from ..worker.run import inside_job
from .executor import Executor, configure, limit_of
from .hosts import open_cluster

log = logging.getLogger(__name__)

#: The name joblib knows the backend by: ``parallel_config(backend="corral")``.
NAME = "corral"
#: Tasks go one per call until ``GROWTH x n_jobs`` of them are dispatched; after that a
#: call takes ``dispatched // (GROWTH x n_jobs)`` tasks (see :func:`batch_size`).
GROWTH = 8
#: What joblib's Parallel passes to ``configure`` for its own process pools (memory mapping,
#: hints, the multiprocessing context): meaningless for jobs, whose arguments travel in files.
JOBLIB_KEYWORDS = frozenset(
    {"max_nbytes", "temp_folder", "mmap_mode", "prefer", "require", "verbose", "context"}
)


def joblib_batch(batch: Callable[[], list[Any]]) -> list[Any]:
    """Run one joblib batch (its ``BatchedCalls``) in a job: a module-level function, so that
    every batch of a Parallel call is a call of ONE function, gathered into one corral batch."""
    return batch()


def batch_size(dispatched: int, n_jobs: int) -> int:
    """Tasks per corral call once ``dispatched`` tasks of the Parallel call went out: 1 for
    the first ``GROWTH x n_jobs``, then growing with the number dispatched, so a map of N
    tasks makes about ``GROWTH x n_jobs x (1 + ln(N / (GROWTH x n_jobs))`` calls and the last
    calls still hold a small part of a worker's share."""
    return max(1, dispatched // (GROWTH * max(1, n_jobs)))


class CorralBackend(ParallelBackendBase):  # type: ignore[misc]  # joblib ships no types
    """joblib's ``"corral"`` backend: each ``Parallel`` call becomes one batch of corral calls.

    The keywords are the Executor's (see :class:`~corral.frontends.executor.Executor`), given
    to ``joblib.parallel_config(backend="corral", ...)``, with one rename: the backend of
    corral (``"slurm"``, ``"local"``, ...) is ``scheduler``, since ``backend`` is joblib's own.
    They are checked here, before any job is submitted; what they leave out comes from
    corral's configuration, as for an Executor. ``max_running`` (or ``max_workers``) caps
    every Parallel call; ``cluster`` hands over an engine already made.
    """

    default_n_jobs = -1  # Parallel() with no n_jobs, under parallel_config: every slot
    supports_retrieve_callback = True  # the futures call joblib back when done
    uses_threads = False
    supports_sharedmem = False  # the tasks run in other processes, on other machines

    def __init__(
        self,
        nesting_level: int | None = None,
        *,
        scheduler: str | Backend | None = None,
        directory: str | None = None,
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
        **resources: Any,
    ) -> None:
        super().__init__(nesting_level=nesting_level)
        # Checked now, as an Executor checks its keywords: a bad option fails at the
        # parallel_config line, not at the first Parallel call.
        try:
            self._settings, _ = configure(
                scheduler, directory, profile, {**resources, "host": host}, max_retries=max_retries,
                retry_on=retry_on, time_factor=time_factor, memory_factor=memory_factor,
            )  # fmt: skip
        except ResourceError as exc:
            if "'backend'" not in str(exc):
                raise
            # backend= is joblib's keyword here: a suggestion of it must say what to write
            raise ResourceError(f"{exc}; with joblib, corral's backend is scheduler=") from None
        self.max_running = limit_of(max_workers=max_workers, max_running=max_running)
        self.allow_nested = allow_nested
        self._scheduler = scheduler
        self._options: dict[str, Any] = {
            "directory": directory, "profile": profile, "host": host, "allow_nested": allow_nested,
            "max_retries": max_retries, "retry_on": retry_on, "time_factor": time_factor,
            "memory_factor": memory_factor, **resources,
        }  # fmt: skip
        self._cluster = cluster
        self._executor: Executor | None = None
        self._block: contextlib.AbstractContextManager[None] | None = None  # a call's open executor.batch()
        self.parallel: Any = None  # the Parallel being served (joblib's own name for it)
        self._n_jobs = 1  # what the current Parallel call was told

    @property
    def cluster(self) -> Cluster:
        """The engine of this backend, opened on first use and shared by its Parallel calls."""
        if self._cluster is None:
            self._cluster = open_cluster(self._settings, self._scheduler)
        return self._cluster

    def _nested(self) -> bool:
        """True inside a corral job that may not submit more (see the module doc)."""
        return inside_job() is not None and not self.allow_nested

    def limits(self, n_jobs: int | None) -> tuple[int, int | None]:
        """``(workers reported to joblib, max_running of the calls)`` for ``n_jobs``."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        n = -1 if n_jobs is None else int(n_jobs)
        if n > 0:
            limit = min(n, self.max_running) if self.max_running else n
            return (1 if n == 1 else max(limit, 2)), limit
        room = self.max_running or self.cluster.backend.limits(self._settings.resources).slots
        limit = max(room + 1 + n, 1)
        # -1 without max_running: no limit of ours; the engine fills the free slots itself.
        return max(limit, 2), (None if n == -1 and not self.max_running else limit)

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """How many tasks run at once for ``n_jobs`` (module doc); joblib sizes its batches by it."""
        if self._nested():
            return int(ThreadingBackend(nesting_level=self.nesting_level).effective_n_jobs(n_jobs))
        return self.limits(n_jobs)[0]

    def configure(
        self, n_jobs: int | None = 1, parallel: Any = None, prefer: Any = None, require: Any = None,
        **backend_kwargs: Any,
    ) -> int:  # fmt: skip
        """Get ready for one Parallel call: an Executor limited as ``n_jobs`` says, and every
        task dispatched at once (``pre_dispatch="all"``: see the module doc)."""
        unknown = sorted(set(backend_kwargs) - JOBLIB_KEYWORDS)
        if unknown:
            raise TypeError(
                f"Parallel(..., {', '.join(unknown)}=...): corral's options go to "
                "joblib.parallel_config(backend='corral', ...), not to Parallel"
            )
        if self._nested():
            log.info("inside a corral job: joblib runs this Parallel call in threads, not as jobs")
            raise FallbackToBackend(ThreadingBackend(nesting_level=self.nesting_level))
        reported, limit = self.limits(n_jobs)
        if reported == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self.parallel = parallel
        if parallel is not None:
            parallel.pre_dispatch = "all"
        self._n_jobs = reported
        self._close_executor()
        self._executor = Executor(self._scheduler, cluster=self.cluster, max_running=limit, **self._options)
        return reported

    def _running(self) -> Executor:
        if self._executor is None:
            raise RuntimeError("the corral joblib backend is not configured: use it through joblib.Parallel")
        return self._executor

    def start_call(self) -> None:
        """A Parallel call begins: gather its tasks until joblib starts waiting for them."""
        self._end_block(submit=False)
        block = self._running().batch()
        block.__enter__()
        self._block = block

    def _end_block(self, *, submit: bool) -> None:
        block, self._block = self._block, None
        if block is None:
            return
        if submit:
            block.__exit__(None, None, None)
        else:  # ended as by an exception: the block's calls are cancelled, never submitted
            aborted = RuntimeError("the joblib call was aborted")
            block.__exit__(RuntimeError, aborted, None)

    @contextlib.contextmanager
    def retrieval_context(self) -> Iterator[None]:
        """Every task is dispatched and joblib waits: submit them, as one batch."""
        self._end_block(submit=True)
        yield

    def compute_batch_size(self) -> int:
        """Tasks per corral call (see :func:`batch_size`)."""
        dispatched = getattr(self.parallel, "n_dispatched_tasks", 0) if self.parallel is not None else 0
        return batch_size(int(dispatched), self._n_jobs)

    def submit(
        self, func: Callable[[], list[Any]], callback: Callable[[Any], None] | None = None
    ) -> CorralFuture:
        """One joblib batch as one corral call; joblib's ``callback`` runs when it is done."""
        future = self._running().submit(joblib_batch, func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, out: CorralFuture) -> Any:
        """The batch's results, or the task's own exception (with the node's traceback)."""
        return out.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A task failed (or the caller stopped): cancel the call's tasks not yet done."""
        self._end_block(submit=False)
        if self._executor is not None:
            self._executor.cancel_all()
        if not ensure_ready:
            self._close_executor()

    def stop_call(self) -> None:
        """A Parallel call ends; a block still open means it never got to wait: drop its calls."""
        self._end_block(submit=False)

    def terminate(self) -> None:
        """The Parallel is done with this backend: let its executor go (the engine stays)."""
        self._end_block(submit=False)
        self._close_executor()

    def _close_executor(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)


def register() -> None:
    """Make ``"corral"`` a joblib backend name (again: the latest registration wins)."""
    register_parallel_backend(NAME, CorralBackend)
