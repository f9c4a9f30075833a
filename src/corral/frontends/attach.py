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
from typing import Any

import cloudpickle

from ..backends.base import Backend
from ..engine.cluster import Cluster
from ..engine.futures import CorralFuture, mark_cancelled
from ..engine.tracking import BatchState, SubState
from ..errors import CorralError, job_error
from ..job import Attempt, ElementStatus, JobState
from ..retry import RetryPolicy
from ..store.batch import BatchStore
from ..store.claims import claim_of
from ..store.records import find_batch, work_root
from ..transports.local import LocalTransport
from ..trust import check_batch_dir


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


def attach(batch: str, *, directory: str | None = None, backend: str | Backend | None = None) -> Attached:
    """Watch a batch again, from any process that sees its work dir: by path, folder name or
    a unique prefix of one (``corral status`` lists them). Finished calls are read, live
    jobs watched, lost calls resubmitted (see the module doc); ``results()`` gives what
    ``map`` would have. ``backend`` defaults to the one that ran the batch."""
    from .sessions import cluster_for

    path = find_batch(batch, work_root(directory))
    check_batch_dir(path)  # before its manifest picks the backend
    root = os.path.dirname(path)
    # Another format's batch is refused before anything else of it is read.
    store_name = BatchStore(path, LocalTransport()).check_format().get("backend")
    if isinstance(backend, Backend):
        cluster = Cluster(backend, root)
    else:
        name = backend or store_name
        if not name:
            raise CorralError(f"{path}: the manifest does not say which backend ran it; pass backend=")
        cluster = cluster_for(name, root)
    return Attached(cluster, cluster.adopt(rebuild(cluster, path), settle))


def rebuild(cluster: Cluster, path: str) -> BatchState:
    """The engine's bookkeeping of the batch in ``path``, as its files tell it. The folder
    must be the user's alone (:func:`corral.trust.check_batch_dir`): its pickles are loaded."""
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
        plan, spec = packed["plan"], packed["spec"]
        sub = SubState(plan, spec, store.script_path(number), job_id=job_ids.get(number))
        sub.submitted_at = sub.last_seen = now
        batch.subs.append(sub)
        for start, end, attempt in plan.ranges:
            for call in range(start, end):
                batch.attempts[call] = max(batch.attempts[call], attempt)
    if not cluster.backend.detached:  # its elements were the old client's children
        alive = _running_here(store)
        for sub in batch.subs:
            _lost_with_the_client(sub, now, alive)
    _load_history(batch)
    _keep_cancels(batch)
    return batch


def _keep_cancels(batch: BatchState) -> None:
    """Calls the old client cancelled stay cancelled (before the first scan, which would
    take their claims for an element's)."""
    finished = batch.store.finished()
    for call, attempt in batch.store.claimed() - finished:
        claim = claim_of(batch.store, call, attempt) if attempt == batch.attempts[call] else None
        if claim is not None and claim.by_client:
            batch.cancelled_before(call)
            mark_cancelled(batch.futures[call])


def _running_here(store: BatchStore) -> set[str]:
    """Elements of a local batch whose process still runs on this host: they outlive a
    client killed at once (each has a session of its own) and will write their outcomes."""
    host = os.uname().nodename
    alive: set[str] = set()
    for task in store.claimed():  # an element between two calls holds no unfinished claim
        claim = claim_of(store, *task)
        if claim is None or claim.by_client or claim.element in alive or claim.host != host:
            continue
        try:
            os.kill(claim.pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass  # someone else's process has that pid now: alive, as far as we can tell
        alive.add(claim.element)
    return alive


def _lost_with_the_client(sub: SubState, now: float, alive: set[str]) -> None:
    if sub.job_id is None:
        return  # never submitted: it is now
    for index in range(sub.plan.elements):
        if sub.element(index) in alive:
            continue  # watched until the scheduler's silence makes it LOST (lost_after)
        status = ElementStatus(sub.element(index), JobState.LOST, None, "its client process ended")
        sub.status[index] = status
        sub.final_at[index] = now


def _load_history(batch: BatchState) -> None:
    """Past failed attempts, for the retry count and the error messages."""
    for (call, attempt), record in sorted(batch.store.attempts().items()):
        if attempt < batch.attempts[call]:
            batch.history.setdefault(call, []).append(Attempt(**record))


def settle(batch: BatchState) -> list[tuple[CorralFuture, bool, Any]]:
    """After the first scan of a rebuilt batch: a call whose current attempt was recorded
    as failed (the old client decided) is decided again with the same policy: retried, or
    failed with its job's error."""
    completions: list[tuple[CorralFuture, bool, Any]] = []
    recorded = batch.store.attempts()
    for call in range(len(batch.futures)):
        task = batch.task(call)
        if call in batch.resolved:
            continue
        record = recorded.get(task)
        state = None if record is None else _state_of(record)
        if record is None or state is None:
            continue  # nothing decided yet, or an exception: its outcome was read by the scan
        error = job_error(
            state, job_id=record["job_id"], call=call, batch=batch.store.name, node=record["node"],
            reason=record["reason"], work_dir=batch.store.path,
        )  # fmt: skip
        sub = batch.sub_of_job(record["job_id"]) if record["job_id"] else None
        if batch.next_attempt(call, Attempt(**record), error, sub):
            continue
        batch.resolved.add(call)
        completions.append((batch.futures[call], False, error))
    return completions


def _state_of(record: dict[str, Any]) -> JobState | None:
    try:
        return JobState[str(record["state"])]
    except KeyError:
        return None
