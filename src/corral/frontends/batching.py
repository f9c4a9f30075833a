"""``Batch``: bundle distributed calls into few jobs, and hand them to the engine.

Inside ``with corral.Batch(max_size=20) as batch:`` every ``distribute`` (and ``sbatch``)
of this thread is collected instead of submitted. When the block ends, or at
``batch.flush()``, the calls are grouped by what their jobs must share: the engine and
resources they resolve to, the refs they run after and the condition. Each group becomes
one array of static chunks of at most ``max_size`` calls each (one job per chunk), and
counts once against the submission budget. A shell command is always a group
of its own.

Groups go out in the order they were opened, so a call may wait on a ref handed out
earlier in the same block: that ref's group is submitted, and has its job id, first.

If the block raises, nothing of it is submitted, then or ever: no finalizer flushes a
batch, and its refs say why they never ran.

:func:`join` (``corral.join()``) flushes the open batch, then makes everything submitted so
far the barrier that later calls wait for (afterany; the state is :mod:`.barrier`'s). A call
may also wait for jobs corral did not submit, by their ids (``f.after("4242")``): the backend
checks that it can (:meth:`~corral.backends.base.Backend.outside_job_id`) at ``distribute``.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import cloudpickle

from ..config import Settings, resolve
from ..engine.dependencies import Needs
from ..engine.request import Request
from ..engine.submitting import Call, guard_nested, pickle_calls
from ..errors import CorralError, SerializationError
from ..job import Condition
from . import barrier, sessions
from .bundle import Bundle
from .commands import run_command
from .node_setup import NodeSetup
from .refs import JobRef

_current: contextvars.ContextVar[Batch | None] = contextvars.ContextVar("corral_batch", default=None)


@dataclass
class Entry:
    """One distributed call (or shell command) waiting to be submitted."""

    ref: JobRef[Any]
    function: Callable[..., Any] | None  # a task function; None for a shell command
    key: int  # which function: calls of one task share it, whatever its options
    command: str | None
    call: Call
    options: dict[str, Any]  # the task's and the call's, not yet resolved
    after: tuple[JobRef[Any] | str, ...]  # refs, and ids of jobs corral did not submit
    condition: Condition
    barrier: tuple[JobRef[Any], ...] = ()  # the join() barrier when it was distributed (afterany)


class Batch:
    """Collect the calls distributed in a ``with`` block and submit them as few jobs: at
    most ``max_size`` calls per job, one array per kind of job. See the module doc."""

    def __init__(self, max_size: int = 20) -> None:
        if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 1:
            raise ValueError(f"max_size={max_size!r} must be a positive whole number")
        self.max_size = max_size
        self.refs: list[JobRef[Any]] = []  # every ref flushed so far, in order
        self._entries: list[tuple[Entry, Settings]] = []  # (entry, resolved settings)
        self._token: contextvars.Token[Batch | None] | None = None
        self._checked: set[int] = set()  # task functions known to pickle

    def __enter__(self) -> Batch:
        if self._token is not None:
            raise RuntimeError("this Batch is already open")
        self._token = _current.set(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._token is not None
        _current.reset(self._token)
        self._token = None
        if exc_type is not None:
            self.discard(f"the Batch block raised {exc!r}")
            return
        self.flush()

    def check(self, entry: Entry) -> None:
        """Pickle what the flush will pickle, so that a bad argument (or function) fails at
        its own ``distribute`` line, not at the end of the block."""
        function = entry.function
        if function is not None and entry.key not in self._checked:
            pickle_calls(function, [])
            self._checked.add(entry.key)
        try:
            cloudpickle.dumps(entry.call)
        except Exception as exc:
            raise SerializationError(f"cannot pickle the arguments of {entry.ref.name}: {exc}") from exc

    def add(self, entry: Entry, settings: Settings) -> None:
        entry.ref.hold(self)
        self._entries.append((entry, settings))

    def flush(self) -> list[JobRef[Any]]:
        """Submit what was collected so far; return those refs, in order (every one now has
        a job id). Each group counts once against the submission budget."""
        entries, self._entries = self._entries, []
        if not entries:
            return []
        submit_groups(entries, self.max_size, "batch")
        refs = [entry.ref for entry, _ in entries]
        self.refs += refs
        return refs

    def discard(self, why: str) -> None:
        """Drop what was collected; its refs will never run and say ``why``."""
        entries, self._entries = self._entries, []
        _discard(entries, why)

    def __len__(self) -> int:
        """Calls collected and not yet submitted."""
        return len(self._entries)


def distribute(entry: Entry) -> None:
    """Submit one entry now, or collect it when a Batch is open in this context."""
    guard_nested(bool(entry.options.get("allow_nested")))
    settings = resolve(**{k: v for k, v in entry.options.items() if k != "allow_nested"})
    batch = _current.get()
    entry.barrier = barrier.current()
    outside = [job for job in entry.after if isinstance(job, str)]
    if outside:  # a job id this backend cannot wait for fails here, not at the flush
        backend = sessions.cluster_for(settings).backend
        for job in outside:
            backend.outside_job_id(job)
    for ref in entry.after:
        if isinstance(ref, str):
            continue
        if ref.unsent:
            raise CorralError(f"cannot run after {ref.name}: it will never run ({ref.unsent})")
        if not ref.submitted and not ref.held_by(batch):
            raise CorralError(
                f"cannot run after {ref.name}: it waits in a Batch that is not flushed; call "
                "flush() on that batch first"
            )
    if batch is not None:
        batch.check(entry)
        batch.add(entry, settings)
        return
    submit_groups([(entry, settings)], 1, "job")


def join(wait: bool = False) -> None:
    """A barrier, as slurminade's ``join()``: every call distributed after it in this process
    (``distribute``, ``sbatch``) runs only once every job submitted before it has ended,
    however it ended (afterany). The open ``Batch`` of this context is flushed first. It
    returns at once: the scheduler keeps the order, and the script may exit. ``wait=True``
    also blocks until those jobs have ended (their results are then at hand)."""
    batch = _current.get()
    if batch is not None:
        batch.flush()
    jobs = barrier.close()
    if wait:
        concurrent.futures.wait([ref.sent() for ref in jobs])


def suspend() -> contextvars.Token[Batch | None]:
    """Let calls in this context go out at once even inside a Batch (srun waits for its job)."""
    return _current.set(None)


def resume(token: contextvars.Token[Batch | None]) -> None:
    _current.reset(token)


def submit_groups(entries: list[tuple[Entry, Settings]], max_size: int, what: str) -> None:
    """Group entries (module doc) and submit each group as one array of static chunks (one
    submission each against the budget: ``what`` names it in the budget's error)."""
    groups: dict[tuple[Any, ...], list[tuple[Entry, Settings]]] = {}
    for entry, settings in entries:
        key = (
            settings.backend,
            settings.directory,
            settings.host,
            settings.clusters,
            settings.resources,
            settings.environment,
            entry.condition,
            frozenset(ref if isinstance(ref, str) else id(ref) for ref in entry.after),
            id(entry.barrier),
            bool(entry.options.get("allow_nested")),
            id(entry) if entry.command is not None else None,
        )
        groups.setdefault(key, []).append((entry, settings))
    for position, group in enumerate(groups.values()):
        try:
            _submit(group, max_size, what)
        except BaseException as exc:
            for rest in list(groups.values())[position:]:
                _discard(rest, f"not submitted: {exc}")
            raise


def _submit(group: list[tuple[Entry, Settings]], max_size: int, what: str) -> None:
    first, settings = group[0]
    cluster = sessions.cluster_for(settings)
    needs = None
    calls = []
    for ref in first.after:
        if isinstance(ref, str):
            continue
        future = ref.sent()
        if not cluster.backend.shares_jobs_with(ref.cluster.backend):
            raise CorralError(f"cannot run after {ref.name}: it runs on another backend")
        calls.append((future.source, future.call))
    outside = tuple(job for job in first.after if isinstance(job, str))
    # The jobs before a join() that this scheduler knows (a job elsewhere cannot be waited for)
    ended = tuple(
        (ref.sent().source, ref.sent().call)
        for ref in first.barrier
        if ref.cluster is not None and cluster.backend.shares_jobs_with(ref.cluster.backend)
    )
    if calls or outside or ended:
        # Waiting for a barrier alone is afterany, which every backend can do
        condition = first.condition if calls or outside else Condition.ANY
        needs = Needs(condition, tuple(calls), outside, ended)
    if first.command is not None:
        fn: Any = run_command
        calls_: list[Call] = [((), {})]
    else:
        functions: dict[int, Any] = {}
        for entry, _ in group:
            assert entry.function is not None
            functions.setdefault(entry.key, entry.function)
        order = {key: i for i, key in enumerate(functions)}
        # the client's logging reaches the calls (each task's own setup is in its function)
        forward = settings.environment.forward_logging
        fn = NodeSetup().wrap(Bundle(tuple(functions.values())), forward_logging=forward)
        calls_ = [((order[e.key], *e.call), {}) for e, _ in group]
    request = Request(
        fn=fn, calls=calls_, resources=settings.resources, chunksize=max_size, needs=needs, strict=True,
        command=first.command, name="sbatch" if first.command is not None else None,
        allow_nested=bool(first.options.get("allow_nested")), budget=settings.submit_budget, what=what,
        environment=settings.environment,
    )  # fmt: skip
    batch = cluster.submit(request)
    for (entry, _), future in zip(group, batch.futures, strict=True):
        entry.ref.send(future, cluster)
    barrier.submitted([entry.ref for entry, _ in group])
    sessions.track(cluster, batch)


def _discard(entries: list[tuple[Entry, Settings]], why: str) -> None:
    for entry, _ in entries:
        entry.ref.drop(why)
