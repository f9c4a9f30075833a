"""Watching a batch again from another process: ``corral.attach``.

A batch's folder holds everything the engine needs (see :mod:`corral.store.batch`): the plans and
job ids of its submissions, what each attempt of each call did, and the engine's settings
(``engine.pkl``, ``subs/<s>.pkl``). :func:`attach` rebuilds the batch's bookkeeping from
them and hands it to the process's engine for that backend and work dir, which then does
what it always does:

* outcomes already written complete their futures at once; nothing that finished runs again;
* live jobs are watched, whatever the client that submitted them is doing (or not);
* a job that ended without a call's outcome, or that the scheduler no longer knows, fails
  the call after the usual grace period, or resubmits it as the retry policy allows;
* submissions written but never submitted (the client died first) are submitted now.

Only one process should watch a batch at a time: two would both resubmit its lost calls.
Nothing is read from a batch folder that is not the user's alone (see :mod:`corral.trust`).
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import cloudpickle

from ..backends.base import Backend
from ..config import Settings, resolve
from ..config_keys import convert
from ..engine.cluster import Cluster
from ..engine.futures import CorralFuture, mark_cancelled
from ..engine.ledger import Decision, Resolve
from ..engine.tracking import BatchState, SubState
from ..errors import CorralError, job_error
from ..job import Attempt, ElementStatus, JobState
from ..retry import RetryPolicy
from ..store.batch import BatchStore
from ..store.protocol import ChunkClaim
from ..store.records import find_batch, work_root
from ..transports.base import Transport
from ..transports.local import LocalTransport
from ..trust import check_batch_dir
from .hosts import connect


class Attached:
    """A batch watched again: its futures, in call order, and what can be done with them."""

    def __init__(self, cluster: Cluster, batch: BatchState) -> None:
        self.cluster = cluster
        self.batch = batch
        self.name = batch.store.name  #: the batch folder's name
        self.path = batch.store.path  #: the batch folder
        self.futures: list[CorralFuture] = list(batch.futures)  #: one per call, in order

    def __len__(self) -> int:
        return len(self.futures)

    def __iter__(self) -> Iterator[CorralFuture]:
        return iter(self.futures)

    def results(self, timeout: float | None = None) -> list[Any]:
        """Every call's value, in call order, as ``Executor.map`` gives them: the first
        failed call raises its own error. ``timeout`` is for all of them together."""
        end = None if timeout is None else time.monotonic() + timeout
        return [f.result(None if end is None else max(0.0, end - time.monotonic())) for f in self.futures]

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every call has ended; True if they all did within ``timeout``."""
        end = None if timeout is None else time.monotonic() + timeout
        for future in self.futures:
            try:
                future.exception(None if end is None else max(0.0, end - time.monotonic()))
            except TimeoutError:
                return False
            except BaseException:  # noqa: BLE001 - a cancelled future has ended too
                pass
        return True

    def cancel(self) -> None:
        """Cancel what is left: calls not started, and the batch's live jobs."""
        self.cluster.cancel_batches([self.batch])

    def __repr__(self) -> str:
        done = sum(f.done() for f in self.futures)
        return f"<Attached {self.name}: {done} of {len(self.futures)} calls ended>"


def attach(
    batch: str,
    *,
    directory: str | None = None,
    backend: str | Backend | None = None,
    host: str | None = None,
) -> Attached:
    """Watch a batch again, from any process that sees its work dir, or over SSH from any
    process that can reach its ``host`` (see :mod:`corral.frontends.hosts`): by path, folder
    name or a unique prefix of one (``corral status`` lists them). Finished calls are read,
    live jobs watched, lost calls resubmitted (see the module doc); ``results()`` gives what
    ``map`` would have. ``backend`` defaults to the one that ran the batch."""
    from .sessions import cluster_for

    settings = resolve(host=host, directory=directory)
    if settings.ssh is not None:
        if isinstance(backend, Backend):
            raise CorralError("attach(host=...) takes a backend's name, not a Backend instance")
        remote = connect(settings)
        root = remote.found.directory
        path = find_remote_batch(batch, root, remote.transport)
        remote.transport.makedirs(path)  # the batch folder must be private too (its root is)
        manifest = BatchStore(path, remote.transport).check_format()
        cluster = cluster_for(on_cluster(settings, manifest), backend or manifest.get("backend"), root)
        return Attached(cluster, cluster.adopt(rebuild(cluster, path, checked=True), settle))
    path = find_batch(batch, work_root(directory))
    check_batch_dir(path)  # before its manifest picks the backend
    root = os.path.dirname(path)
    # Another format's batch is refused before anything else of it is read.
    manifest = BatchStore(path, LocalTransport()).check_format()
    if isinstance(backend, Backend):
        cluster = Cluster(backend, root)
    else:
        name = backend or manifest.get("backend")
        if not name:
            raise CorralError(f"{path}: the manifest does not say which backend ran it; pass backend=")
        cluster = cluster_for(on_cluster(settings, manifest), name, root)
    return Attached(cluster, cluster.adopt(rebuild(cluster, path), settle))


def on_cluster(settings: Settings, manifest: dict[str, Any]) -> Settings:
    """``settings`` for the SLURM cluster whose job ids the batch holds, when its manifest
    names one (``clusters=``: see :mod:`corral.backends.slurm`)."""
    clusters = manifest.get("clusters")
    if clusters is None:
        return settings
    return replace(settings, clusters=str(convert("clusters", clusters)))


def rebuild(cluster: Cluster, path: str, *, checked: bool = False) -> BatchState:
    """The engine's bookkeeping of the batch in ``path``, as its files tell it. The folder
    must be the user's alone (:func:`corral.trust.check_batch_dir`; ``checked``: it was,
    on its host): its pickles are loaded. What the elements did is read by the first scan
    (see :meth:`Cluster.adopt`)."""
    if not checked:
        check_batch_dir(path)
    store = BatchStore(path, cluster.backend.transport)
    manifest = store.check_format()  # another format's batch: refused before anything is read
    store.sweep_temporaries()  # what writers killed with the old client left behind
    try:
        settings = cloudpickle.loads(store.read_engine())
    except FileNotFoundError:
        raise CorralError(f"{path} was written by an older corral: it cannot be attached to") from None
    batch = BatchState(
        store, int(manifest["calls"]), [], cluster, settings["retry"] or RetryPolicy(0),
        name=settings["name"], max_running=settings["max_running"],
        worker_options=settings["worker_options"], explain=cluster.backend.explain_end,
    )  # fmt: skip
    job_ids = store.job_ids()
    now = time.monotonic()
    for number in store.submissions():
        packed = pickle.loads(store.read_submission_engine(number))
        sub = SubState(packed["plan"], packed["spec"], store.script_path(number), job_id=job_ids.get(number))
        sub.submitted_at = sub.last_seen = now
        batch.add_sub(sub)  # a submission of later attempts moves its calls on to them
    for (call, _), record in sorted(store.attempts().items()):
        batch.ledger.past_attempt(call, Attempt(**record))
    claims = {number: store.chunk_claims(number) for number in range(len(batch.subs))}
    if not cluster.backend.detached:  # its elements were the old client's children
        alive = _running_here(claims)
        cluster.backend.adopt_elements(alive)
        for number, sub in enumerate(batch.subs):
            _lost_with_the_client(batch, number, sub, now, alive)
    _keep_cancels(batch, claims)
    return batch


def _keep_cancels(batch: BatchState, claims: dict[int, dict[int, ChunkClaim]]) -> None:
    """Calls the old client took for itself (it cancelled them) stay cancelled."""
    for number, taken in claims.items():
        tasks = batch.tasks_of(number)
        for start, claim in taken.items():
            if not claim.who.by_client:
                continue
            for call, attempt in tasks[start : start + claim.n]:
                if batch.ledger.attempt(call) == attempt and batch.ledger.cancel(call):
                    mark_cancelled(batch.futures[call])


def _running_here(claims: dict[int, dict[int, ChunkClaim]]) -> dict[str, int]:
    """Elements of a local batch whose process still runs on this host: they outlive a
    client killed at once (each has a session of its own) and will write their results.
    Element id -> pid."""
    host = os.uname().nodename
    alive: dict[str, int] = {}
    for taken in claims.values():
        for claim in taken.values():
            who = claim.who
            if who.by_client or who.element in alive or who.host != host:
                continue
            try:
                os.kill(who.pid, 0)
            except ProcessLookupError:
                continue
            except PermissionError:
                pass  # someone else's process has that pid now: alive, as far as we can tell
            alive[who.element] = who.pid
    return alive


def _lost_with_the_client(
    batch: BatchState, number: int, sub: SubState, now: float, alive: dict[str, int]
) -> None:
    if sub.job_id is None:
        return  # never submitted: it is now
    for index in range(sub.plan.elements):
        if sub.element(index) in alive:
            continue  # the backend reports it by its pid (adopt_elements) until it ends
        status = ElementStatus(sub.element(index), JobState.LOST, None, "its client process ended")
        batch.ledger.element_ended(number, index, status, now)


def settle(batch: BatchState) -> list[tuple[CorralFuture, bool, Any]]:
    """After the first scan of a rebuilt batch: a call whose current attempt was recorded
    as failed (the old client decided) is decided again with the same policy: retried, or
    failed with its job's error; a call the old client marked cancelled that no element
    took stays cancelled."""
    completions: list[tuple[CorralFuture, bool, Any]] = []
    recorded = batch.store.attempts()
    marked = batch.store.cancel_marks()
    for call in range(len(batch.futures)):
        if batch.is_resolved(call):
            continue
        task = batch.task(call)
        if task in marked and batch.ledger.cancel(call):
            mark_cancelled(batch.futures[call])
            continue
        record = recorded.get(task)
        state = None if record is None else _state_of(record)
        if record is None or state is None:
            continue  # nothing decided yet, or an exception: its result was read by the scan
        error = job_error(
            state, job_id=record["job_id"], call=call, batch=batch.store.name, node=record["node"],
            reason=record["reason"], work_dir=batch.store.path,
        )  # fmt: skip
        element = record["job_id"] or ""
        status = ElementStatus(element, state, record["node"], record["reason"])
        # Recorded once already: the ledger must not record it again, only decide.
        decisions = batch.ledger.failed(call, task[1], error, element, status, started=True)
        completions += batch.apply([_unrecorded(d) for d in decisions])
    return completions


def _unrecorded(decision: Decision) -> Decision:
    # A retry's record is written again, the same: harmless.
    return replace(decision, record=None) if isinstance(decision, Resolve) else decision


def _state_of(record: dict[str, Any]) -> JobState | None:
    try:
        return JobState[str(record["state"])]
    except KeyError:
        return None


def find_remote_batch(ref: str, root: str, transport: Transport) -> str:
    """The folder of the batch ``ref`` names on a host: an absolute path, else the name of a
    folder in ``root`` or a prefix of exactly one (as :func:`corral.store.records.find_batch`)."""
    if "/" in ref:
        path = ref if ref.startswith("/") else os.path.join(root, ref)
        if not _is_batch(path, transport):
            raise CorralError(f"{path} is not a corral batch folder (it has no manifest.json)")
        return path
    names = sorted(n for n in transport.listdir(root) if n.startswith(ref) and not n.startswith("."))
    found = [n for n in ([ref] if ref in names else names) if _is_batch(os.path.join(root, n), transport)]
    if len(found) == 1:
        return os.path.join(root, found[0])
    if found:
        raise CorralError(f"{ref!r} matches {len(found)} batches in {root}: give more of the name")
    raise CorralError(f"no batch {ref!r} in {root}")


def _is_batch(path: str, transport: Transport) -> bool:
    try:
        transport.read_bytes(os.path.join(path, "manifest.json"))
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True
