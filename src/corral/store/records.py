"""A read-only view of work dirs: which batches there are, and how each call of one stands.

Everything here comes from the files alone (see :mod:`corral.store.batch` for the layout); no
scheduler command runs, so it works from any machine that sees the work dir, long after the
client that submitted a batch has gone. What the files cannot say is whether a started call's
job is still alive: :attr:`CallStatus.RUNNING` means "started", except that a call started on
this machine whose process is gone is :attr:`CallStatus.LOST` (see :mod:`corral.store.claims`).

Only data is read: JSON records, the data line of each outcome
(:meth:`~corral.store.batch.BatchStore.read_outcome_record`), claim and log text; never a pickle, so
a planted one runs nothing here, and a file that is not what corral wrote is reported, not
fatal. The work dir root and each batch folder must pass :func:`corral.trust.check_private_dir`
before anything in them is read. Values are returned as found: :mod:`corral.cli.display` makes
them safe for a terminal.

The *latest attempt* of a call is the highest attempt number that appears for it in any
submission plan (``subs/*.json``), claim, result or attempt record; a call's status is its
latest attempt's. Reading is proportional to what is there: each folder is listed once, every
outcome of a latest attempt is read (only it says whether the call succeeded), and a claim is
read only for a call that has no outcome.
"""

from __future__ import annotations

import enum
import itertools
import math
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..config import resolve
from ..errors import ERROR_FOR_STATE, CorralError, FormatError, JobLostError
from ..job import JobState
from ..transports.local import LocalTransport
from ..trust import check_private_dir
from .batch import BatchStore, Outcome, default_root, task_name
from .claims import process_gone
from .protocol import ChunkClaim, Claim, is_element_id
from .replay import Event, Ran, Replay, Skipped, Took

#: How many batch names an error message lists before it says "and N more".
_SHOWN = 10


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


@dataclass(frozen=True)
class BatchSummary:
    """One batch as its folder describes it: what it runs and how each of its calls stands."""

    name: str
    path: str
    function: str
    backend: str
    created: float  # seconds since the epoch, as time.time() gives
    calls: int
    job_ids: list[str] = field(hash=False)  # one per submission that reached the scheduler
    statuses: list[CallStatus] = field(hash=False)  # by call index
    counts: dict[CallStatus, int] = field(hash=False)  # every status, 0 included
    failures: list[Failure] = field(hash=False)  # one per FAILED call, by call index


@dataclass(frozen=True)
class CallLogs:
    """One attempt of one call: its own output, and why it failed if it did."""

    batch: str
    call: int
    attempt: int
    status: CallStatus
    stdout: str  # "" when the call wrote nothing or has not started
    stderr: str
    traceback: str  # the traceback formatted where the call ran; "" unless it raised
    stdout_path: str
    stderr_path: str
    failure: Failure | None  # set when status is FAILED
    # The stderr of the array element that ran the attempt, when the call has none of its own
    # or no outcome: where a failure outside the call (an import on the node, a hard exit)
    # left its trace. "" otherwise, or when no element is known.
    element: str = ""
    element_stderr: str = ""
    element_stderr_path: str = ""


def work_root(directory: str | None = None) -> str:
    """The root that holds the batch folders: ``directory`` if given, else the configured
    ``directory`` (``$CORRAL_DIR``, config files: see :mod:`corral.config`), else
    ``./.corral``; an absolute path."""
    if directory is None:
        directory = resolve().directory
    return os.path.abspath(os.path.expanduser(directory)) if directory else default_root()


def list_batches(root: str | None = None) -> list[str]:
    """The paths of the batch folders in ``root`` (default :func:`work_root`), oldest first.
    A folder counts once its manifest is written, which is the last step of creating it."""
    root = work_root(root)
    transport = LocalTransport()
    if os.path.exists(root) and not os.path.isdir(root):
        raise CorralError(f"the work dir {root} is not a folder")
    if os.path.exists(root):  # a missing work dir simply holds no batches
        # The root may be reached through a link (home -> scratch): the folder it leads to counts.
        check_private_dir(os.path.realpath(root))
    found: list[tuple[float, str]] = []
    for name in transport.listdir(root):
        path = os.path.join(root, name)
        try:
            created = _created(BatchStore(path, transport).read_manifest())
        except (FileNotFoundError, NotADirectoryError):
            continue  # not a batch, or one still being written
        except (OSError, ValueError, TypeError, AttributeError):
            created = 0.0  # listed all the same: summarize() says what is wrong with it
        found.append((created, path))
    return [path for _, path in sorted(found)]


def find_batch(ref: str, root: str | None = None) -> str:
    """The folder of the batch ``ref`` names: a path (anything with a ``/``, or ``.``), else
    the name of a folder in ``root`` (default :func:`work_root`) or a prefix of exactly one."""
    if os.sep in ref or (os.altsep and os.altsep in ref) or ref in (".", ".."):
        path = os.path.abspath(os.path.expanduser(ref))
        if not BatchStore.is_batch(path):
            raise CorralError(f"{path} is not a corral batch folder (it has no manifest.json)")
        return path
    root = work_root(root)
    batches = list_batches(root)
    names = [os.path.basename(p) for p in batches]
    if ref in names:
        return batches[names.index(ref)]
    matches = [p for p, n in zip(batches, names, strict=True) if n.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = listing(os.path.basename(p) for p in matches)
        raise CorralError(f"{ref!r} matches {len(matches)} batches in {root}: {shown}; give more of the name")
    if not names:
        raise CorralError(f"no batch {ref!r}: the work dir {root} holds no batches")
    newest = listing(reversed(names))
    raise CorralError(f"no batch {ref!r} in {root}; batches there, newest first: {newest}")


def summarize(path: str) -> BatchSummary:
    """Read one batch folder: its manifest, job ids, and the status of every call."""
    store, manifest, calls = _open(path)
    folder = _scan(store, calls)
    statuses: list[CallStatus] = []
    failures: list[Failure] = []
    for call in range(calls):
        status, attempt, outcome = _latest_status(store, folder, call)
        statuses.append(status)
        if status is CallStatus.FAILED:
            failures.append(_failure(store, call, attempt, outcome))
    counts = Counter(statuses)
    try:
        job_ids = list(store.job_ids().values())
    except (OSError, ValueError):  # a job id file that is not text: shown as such
        job_ids = ["(unreadable)"]
    return BatchSummary(
        name=store.name,
        path=store.path,
        function=str(manifest.get("function", "?")),
        backend=str(manifest.get("backend", "?")),
        created=_created(manifest),
        calls=calls,
        job_ids=job_ids,
        statuses=statuses,
        counts={status: counts[status] for status in CallStatus},
        failures=failures,
    )


def call_logs(path: str, call: int, attempt: int | None = None) -> CallLogs:
    """The output of attempt ``attempt`` of call ``call`` (default: the attempt that decides
    the call's status, normally its latest) and, if it failed, why."""
    store, _, calls = _open(path)
    if not 0 <= call < calls:
        span = f"calls 0 to {calls - 1}" if calls else "no calls"
        raise CorralError(f"there is no call {call} in batch {store.name}: it has {span}")
    folder = _scan(store, calls)
    if attempt is None:
        status, attempt, result = _latest_status(store, folder, call)
    elif 0 <= attempt <= folder.latest[call]:
        status, result = _status(store, folder, call, attempt)
    else:
        raise CorralError(
            f"call {call} of batch {store.name} has no attempt {attempt}: "
            f"its attempts are 0 to {folder.latest[call]}"
        )
    where = folder.replay.output(call, attempt) if folder.replay.output(call, attempt) else None
    element = (
        where[0] if where else folder.took.get((call, attempt), "") or _recorded_element(store, call, attempt)
    )
    out_path = store.output_path(element, "out") if element else ""
    err_path = store.output_path(element, "err") if element else ""
    stdout = _read_range(store, element, "out", where[1]) if where else ""
    stderr = _read_range(store, element, "err", where[2]) if where else ""
    shown = element if element and (not stderr or result is None) else ""
    element_path = store.element_log(shown, "err") if shown else ""
    failed = status is CallStatus.FAILED
    return CallLogs(
        batch=store.name,
        call=call,
        attempt=attempt,
        status=status,
        stdout=stdout,
        stderr=stderr,
        traceback=result.traceback if result is not None and not result.ok else "",
        stdout_path=out_path,
        stderr_path=err_path,
        failure=_failure(store, call, attempt, result) if failed else None,
        element=shown,
        element_stderr=store.read_text(element_path) if shown else "",
        element_stderr_path=element_path,
    )


# -- reading one batch --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Folder:
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


def _open(path: str) -> tuple[BatchStore, dict[str, Any], int]:
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


def _scan(store: BatchStore, calls: int) -> _Folder:
    # The plans, one scan of the streams, one listing of attempts/ and cancels/, and the
    # client's chunk claims; a result is read from its own file only when it is large.
    plans = {sub: _planned(store, sub) for sub in store.submissions()}
    replay = Replay(calls, lambda sub: plans.get(sub, []))
    folder = _Folder([0] * calls, replay, {}, {}, set(), store.recorded(), set(store.cancel_marks()))
    for name, data in store.scan_streams({}).items():
        for event in replay.feed(name, data, 0.0):
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


def _take(store: BatchStore, folder: _Folder, event: Event) -> None:
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


def _latest_status(store: BatchStore, folder: _Folder, call: int) -> tuple[CallStatus, int, Outcome | None]:
    """The call's status, the attempt that decides it, and that attempt's result if read."""
    number = folder.latest[call]
    status, outcome = _status(store, folder, call, number)
    if status is CallStatus.CANCELLED:
        # The engine cancels the next attempt when a late result of an earlier one succeeds:
        # the call completed, by that earlier attempt.
        for earlier in range(number - 1, -1, -1):
            found = folder.results.get((call, earlier))
            if found is not None and found.ok:
                return CallStatus.COMPLETED, earlier, found
    return status, number, outcome


def _status(store: BatchStore, folder: _Folder, call: int, attempt: int) -> tuple[CallStatus, Outcome | None]:
    task = (call, attempt)
    outcome = folder.results.get(task)
    if outcome is not None:
        return (CallStatus.COMPLETED if outcome.ok else CallStatus.FAILED), outcome
    if task in folder.recorded:
        return CallStatus.FAILED, None
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


def _read_range(store: BatchStore, element: str, stream: str, span: tuple[int, int | None]) -> str:
    try:
        return store.read_output(element, stream, span[0], span[1])
    except OSError:
        return ""


def _recorded_element(store: BatchStore, call: int, attempt: int) -> str:
    """The element an attempt record names (a job that died before its claim was read)."""
    if (call, attempt) not in store.recorded():
        return ""
    try:
        job = store.read_attempt(call, attempt).get("job_id")
    except (OSError, ValueError, AttributeError):
        return ""
    # Only an id corral makes: a planted record must not name a log outside logs/.
    return job if isinstance(job, str) and is_element_id(job) else ""


def _failure(store: BatchStore, call: int, attempt: int, outcome: Outcome | None) -> Failure:
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


def _created(manifest: dict[str, Any]) -> float:
    created = manifest.get("created", 0.0)
    return float(created) if isinstance(created, (int, float)) and math.isfinite(created) else 0.0


def _error_name(state: str) -> str:
    """The name of the error the client raises for a job that ended in ``state``."""
    try:
        return ERROR_FOR_STATE.get(JobState[state], JobLostError).__name__
    except KeyError:
        return "JobError"


def listing(names: Iterable[str]) -> str:
    """``a, b, c``: the first ten names, then "and N more"."""
    listed = list(names)
    more = f" and {len(listed) - _SHOWN} more" if len(listed) > _SHOWN else ""
    return ", ".join(listed[:_SHOWN]) + more
