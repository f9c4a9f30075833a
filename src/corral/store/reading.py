"""Reading one batch folder for people: each call's status from the plans, the elements'
streams (through :class:`~corral.store.replay.Replay`, the reader the engine uses too), the
attempt records and the client's cancels. Data only: no pickle is loaded here. The public
view over it is :mod:`corral.store.records`."""

from __future__ import annotations

import enum
import itertools
import os
from dataclasses import dataclass
from typing import Any

from ..errors import ERROR_FOR_STATE, CorralError, FormatError, JobLostError
from ..job import JobState
from ..transports.local import LocalTransport
from ..trust import check_private_dir
from .batch import BatchStore, Outcome, task_name
from .claims import process_gone
from .protocol import ChunkClaim, Claim, is_element_id
from .replay import CallEvent, Ran, Replay, Skipped, Took, each_call


class CallStatus(enum.Enum):
    """Where one call stands, as far as its batch's folder says (members in display order).

    No scheduler is asked, so RUNNING means *started*: an element claimed the call and no
    outcome is there yet. A call whose job died elsewhere stays RUNNING until a client that
    watches the batch notices and records the attempt (then it is FAILED, or PENDING again if
    retried); one whose process ran on this machine and is gone is LOST at once, since no
    outcome can come any more (a client still watching will record it, as for any host)."""

    COMPLETED = "completed"  # its latest attempt returned a value
    FAILED = "failed"  # its latest attempt raised, or its job ended without an outcome (an attempt record)
    CANCELLED = "cancelled"  # the client took its latest attempt so that no job would run it
    LOST = "lost"  # it started on this machine, and its process is gone without an outcome
    RUNNING = "running"  # an array element took it and no outcome is there yet: it *started*
    PENDING = "pending"  # nobody has taken its latest attempt yet


@dataclass(frozen=True)
class Failure:
    """Why a call failed: the exception it raised, or how its job ended without an outcome
    (then ``type_name`` is the :class:`~corral.errors.JobError` subclass the client raises)."""

    call: int
    attempt: int
    type_name: str  # e.g. "builtins.ValueError", or "JobTimeoutError"
    message: str


# -- reading one batch --------------------------------------------------------------------------


@dataclass(frozen=True)
class Folder:
    """What the folder holds: each call's latest attempt number; from the streams, who took
    each (call, attempt), its result record and which were skipped; the attempt records and
    the client's cancels (names only)."""

    latest: list[int]
    replay: Replay
    took: dict[tuple[int, int], str]
    results: dict[tuple[int, int], Outcome]
    skipped: set[tuple[int, int]]
    recorded: set[tuple[int, int]]
    cancelled: set[tuple[int, int]]


def open_batch(path: str) -> tuple[BatchStore, dict[str, Any], int]:
    store = BatchStore(os.path.abspath(path), LocalTransport())
    if os.path.isdir(store.path):
        check_private_dir(store.path)
    try:
        manifest = store.check_format()  # a batch of another format: its one-line error, nothing read
        calls = int(manifest["calls"])
    except FileNotFoundError:
        raise CorralError(f"{store.path} is not a corral batch folder (it has no manifest.json)") from None
    except FormatError:
        raise  # it says what the batch is, as it is
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CorralError(f"{store.path}/manifest.json cannot be read: {exc!r}") from exc
    # The calls' offsets file holds one offset more than there are calls: a manifest that
    # claims more (a huge number would exhaust memory here) is not the one corral wrote.
    try:
        stored = os.path.getsize(store.calls_index_path()) // 8 - 1
    except OSError:
        stored = -1
    if not 0 <= calls <= stored:
        raise CorralError(f"{store.path}/manifest.json says {calls} calls; calls.idx holds {max(stored, 0)}")
    return store, manifest, calls


def scan_batch(store: BatchStore, calls: int) -> Folder:
    # The plans, one scan of the streams, one listing of attempts/ and cancels/, and the
    # client's chunk claims; a result is read from its own file only when it is large.
    plans = {sub: _planned(store, sub) for sub in store.submissions()}
    replay = Replay(calls, lambda sub: plans.get(sub, []))
    folder = Folder([0] * calls, replay, {}, {}, set(), store.recorded(), set(store.cancel_marks()))
    for name, data in store.scan_streams({}).items():
        for event in each_call(replay.feed(name, data, 0.0)):
            _take(store, folder, event)
    for sub, tasks in plans.items():
        for start, claim in _chunk_claims(store, sub).items():
            if claim.who.by_client:
                folder.cancelled.update(tasks[start : start + claim.n])
    latest = folder.latest
    planned = (task for tasks in plans.values() for task in tasks)
    seen = itertools.chain(planned, folder.took, folder.results, folder.recorded)
    for call, attempt in seen:
        if 0 <= call < calls and attempt > latest[call]:
            latest[call] = attempt
    return folder


def _take(store: BatchStore, folder: Folder, event: CallEvent) -> None:
    if isinstance(event, Took):
        folder.took.setdefault((event.call, event.attempt), event.element)
    elif isinstance(event, Ran):
        folder.took.setdefault((event.call, event.attempt), event.element)
        folder.results[(event.call, event.attempt)] = _outcome(store, event)
    elif isinstance(event, Skipped):
        folder.skipped.add((event.call, event.attempt))
    elif event.call is not None and event.attempt is not None:  # Damaged, naming its call
        where = f"{store.stream_path(event.element)} at offset {event.offset}"
        message = f"unreadable result in {where}: {event.reason}"
        folder.results[(event.call, event.attempt)] = Outcome(
            False, b"", type_name="CorralError", message=message
        )


def _chunk_claims(store: BatchStore, sub: int) -> dict[int, ChunkClaim]:
    try:
        return store.chunk_claims(sub)
    except (OSError, ValueError):  # a claim that is not one corral wrote: none of the client's
        return {}


def _planned(store: BatchStore, sub: int) -> list[tuple[int, int]]:
    """The (call, attempt) pairs submission ``sub`` plans; none from a plan that is not one
    (its other files still say how its calls stand)."""
    try:
        return list(store.read_plan(sub).tasks)
    except (OSError, ValueError):  # FormatError is a ValueError
        return []


def latest_status(store: BatchStore, folder: Folder, call: int) -> tuple[CallStatus, int, Outcome | None]:
    """The call's status, the attempt that decides it, and that attempt's result if read."""
    number = folder.latest[call]
    status, outcome = status_of(store, folder, call, number)
    if status is CallStatus.CANCELLED:
        # The engine cancels the next attempt when a late result of an earlier one succeeds:
        # the call completed, by that earlier attempt.
        for earlier in range(number - 1, -1, -1):
            found = folder.results.get((call, earlier))
            if found is not None and found.ok:
                return CallStatus.COMPLETED, earlier, found
    return status, number, outcome


def status_of(
    store: BatchStore, folder: Folder, call: int, attempt: int
) -> tuple[CallStatus, Outcome | None]:
    task = (call, attempt)
    outcome = folder.results.get(task)
    if outcome is not None:
        return (CallStatus.COMPLETED if outcome.ok else CallStatus.FAILED), outcome
    if task in folder.recorded:
        # `corral cancel` marks the attempts it cancels, and records those its jobs ran as
        # CANCELLED (so does a client watching when the job ends): cancelled, not failed.
        cancelled = task in folder.cancelled and _recorded_state(store, task) == "CANCELLED"
        return (CallStatus.CANCELLED if cancelled else CallStatus.FAILED), None
    element = folder.took.get(task)
    if task in folder.skipped or (element is None and task in folder.cancelled):
        return CallStatus.CANCELLED, None
    if element is not None:
        log = folder.replay.elements.get(element)
        start = log.start if log is not None else None
        if start is not None and log is not None and log.end is None:
            if process_gone(Claim(element, start.host, start.pid), start.t):
                return CallStatus.LOST, None
        return CallStatus.RUNNING, None
    return CallStatus.PENDING, None


def _recorded_state(store: BatchStore, task: tuple[int, int]) -> str:
    try:
        record = store.read_attempt(*task)
    except (OSError, ValueError):
        return ""
    return str(record.get("state")) if isinstance(record, dict) else ""


def _outcome(store: BatchStore, ran: Ran) -> Outcome:
    """A Result's data, without its payload; a large one's from its own file's data line (a
    file that is not what corral wrote: a failure that says so, as the client fails it)."""
    result = ran.result
    if not result.in_file:
        return Outcome(
            result.ok, b"", type_name=result.type_name, message=result.message, traceback=result.traceback,
            element=ran.element, host=result.host, started=result.started, finished=result.finished,
        )  # fmt: skip
    try:
        return store.read_outcome_record(ran.call, ran.attempt)
    except (OSError, ValueError) as exc:
        where = f"results/{task_name(ran.call, ran.attempt)}.pkl"
        return Outcome(False, b"", type_name="CorralError", message=f"unreadable outcome {where}: {exc}")


def read_range(store: BatchStore, element: str, stream: str, span: tuple[int, int | None]) -> str:
    try:
        return store.read_output(element, stream, span[0], span[1])
    except OSError:
        return ""


def recorded_element(store: BatchStore, call: int, attempt: int) -> str:
    """The element an attempt record names (a job that died before its claim was read)."""
    if (call, attempt) not in store.recorded():
        return ""
    try:
        job = store.read_attempt(call, attempt).get("job_id")
    except (OSError, ValueError, AttributeError):
        return ""
    # Only an id corral makes: a planted record must not name a log outside logs/.
    return job if isinstance(job, str) and is_element_id(job) else ""


def failure_of(store: BatchStore, call: int, attempt: int, outcome: Outcome | None) -> Failure:
    if outcome is not None and not outcome.ok:
        return Failure(call, attempt, outcome.type_name, outcome.message)
    try:
        record = store.read_attempt(call, attempt)
        if not isinstance(record, dict):
            raise ValueError(f"a JSON {type(record).__name__}, not an object")
    except (OSError, ValueError) as exc:
        return Failure(call, attempt, "?", f"its attempt record cannot be read: {exc!r}")
    state, reason = str(record.get("state") or "?"), str(record.get("reason") or "")
    if state.startswith("raised "):  # its outcome is gone, yet the record still says what it raised
        return Failure(call, attempt, state.removeprefix("raised "), reason)
    job, node = record.get("job_id") or "(never started)", record.get("node")
    message = f"job {job} ended {state}{f' on {node}' if node else ''}{f': {reason}' if reason else ''}"
    return Failure(call, attempt, _error_name(state), message)


def _error_name(state: str) -> str:
    """The name of the error the client raises for a job that ended in ``state``."""
    try:
        return ERROR_FOR_STATE.get(JobState[state], JobLostError).__name__
    except KeyError:
        return "JobError"
