"""A read-only view of work dirs: which batches there are, and how each call of one stands.

Everything here comes from the files alone (see :mod:`corral.store.batch` for the layout); no
scheduler command runs, so it works from any machine that sees the work dir, long after the
client that submitted a batch has gone. What the files cannot say is whether a started call's
job is still alive: :attr:`CallStatus.RUNNING` means "started", except that a call started on
this machine whose process is gone is :attr:`CallStatus.LOST` (see :mod:`corral.store.claims`).

Only data is read: the records of the elements' streams (a Result's data, never its
payload), the data line of a large result's file, claims, attempt records and log text;
never a pickle, so a planted one runs nothing here, and a file or record that is not what
corral wrote is reported, not fatal. The work dir root and each batch folder must pass
:func:`corral.trust.check_private_dir` before anything in them is read. Values are returned
as found: :mod:`corral.cli.display` makes them safe for a terminal.

The *latest attempt* of a call is the highest attempt number that appears for it in any
submission plan (``subs/*.json``), stream record or attempt record; a call's status is its
latest attempt's. Reading is proportional to what is there: the streams are read once, in one
scan, and a result's own file only when it was too large for its stream.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..config import resolve
from ..errors import CorralError
from ..transports.local import LocalTransport
from ..trust import check_private_dir
from .batch import BatchStore, default_root
from .claims import process_gone
from .protocol import Claim
from .reading import CallStatus as CallStatus
from .reading import Failure as Failure
from .reading import (
    Folder,
    failure_of,
    latest_status,
    open_batch,
    read_range,
    recorded_element,
    scan_batch,
    status_of,
)

#: How many batch names an error message lists before it says "and N more".
_SHOWN = 10


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


@dataclass(frozen=True)
class OpenCalls:
    """The calls of one batch that have not ended, as its folder tells, and what runs them:
    what ``corral cancel`` acts on and ``corral clean`` keeps."""

    name: str
    path: str
    backend: str  # the manifest's: the backend that ran the batch
    pending: list[tuple[int, int]] = field(hash=False)  # (call, attempt) no element has taken
    started: list[tuple[int, int]] = field(hash=False)  # taken, no outcome yet (running or lost)
    elements: dict[tuple[int, int], tuple[str, str | None]] = field(hash=False)  # started -> element, host
    job_ids: list[str] = field(hash=False)  # the jobs of the submissions that plan an open call
    here: dict[str, int] = field(hash=False)  # elements still running on this host -> pid

    def __bool__(self) -> bool:
        return bool(self.pending or self.started)


def open_calls(path: str) -> OpenCalls:
    """The calls of the batch in ``path`` whose latest attempt has not ended (pending,
    running or lost), the job ids of the submissions that may still run them, and the
    elements of this host that still run. Data only, like the rest of this module."""
    store, manifest, calls = open_batch(path)
    folder = scan_batch(store, calls)
    pending: list[tuple[int, int]] = []
    started: list[tuple[int, int]] = []
    for call in range(calls):
        status, attempt, _ = latest_status(store, folder, call)
        if status is CallStatus.PENDING:
            pending.append((call, attempt))
        elif status in (CallStatus.RUNNING, CallStatus.LOST):
            started.append((call, attempt))
    wanted = set(pending) | set(started)
    job_ids: list[str] = []
    if wanted:
        try:
            found = store.job_ids()
        except (OSError, ValueError):
            found = {}
        for sub, job_id in sorted(found.items()):
            tasks: Iterable[tuple[int, int]]
            try:
                tasks = store.read_plan(sub).tasks
            except (OSError, ValueError):
                tasks = wanted  # a plan that cannot be read: its job may run anything
            if any(task in wanted for task in tasks):
                job_ids.append(job_id)
    return OpenCalls(
        name=store.name, path=store.path, backend=str(manifest.get("backend", "")), pending=pending,
        started=started, elements={t: _element_of(folder, t) for t in started},
        job_ids=job_ids, here=_running_here(folder) if wanted else {},
    )  # fmt: skip


def _element_of(folder: Folder, task: tuple[int, int]) -> tuple[str, str | None]:
    element = folder.took.get(task, "")
    log = folder.replay.elements.get(element)
    return element, (log.start.host if log is not None and log.start is not None else None)


def _running_here(folder: Folder) -> dict[str, int]:
    """Elements whose latest run started on this host and whose process still runs."""
    host = os.uname().nodename
    alive: dict[str, int] = {}
    for element, log in folder.replay.elements.items():
        start = log.start
        if start is None or log.end is not None or start.host != host:
            continue
        if not process_gone(Claim(element, start.host, start.pid), start.t):
            alive[element] = start.pid
    return alive


def created(path: str) -> float:
    """When the batch in ``path`` was created, as its manifest says (0.0 when it cannot)."""
    try:
        return _created(BatchStore(path, LocalTransport()).read_manifest())
    except (OSError, ValueError, TypeError, AttributeError):
        return 0.0


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
    store, manifest, calls = open_batch(path)
    folder = scan_batch(store, calls)
    statuses: list[CallStatus] = []
    failures: list[Failure] = []
    for call in range(calls):
        status, attempt, outcome = latest_status(store, folder, call)
        statuses.append(status)
        if status is CallStatus.FAILED:
            failures.append(failure_of(store, call, attempt, outcome))
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
    store, _, calls = open_batch(path)
    if not 0 <= call < calls:
        span = f"calls 0 to {calls - 1}" if calls else "no calls"
        raise CorralError(f"there is no call {call} in batch {store.name}: it has {span}")
    folder = scan_batch(store, calls)
    if attempt is None:
        status, attempt, result = latest_status(store, folder, call)
    elif 0 <= attempt <= folder.latest[call]:
        status, result = status_of(store, folder, call, attempt)
    else:
        raise CorralError(
            f"call {call} of batch {store.name} has no attempt {attempt}: "
            f"its attempts are 0 to {folder.latest[call]}"
        )
    where = folder.replay.output(call, attempt) if folder.replay.output(call, attempt) else None
    element = (
        where[0] if where else folder.took.get((call, attempt), "") or recorded_element(store, call, attempt)
    )
    out_path = store.output_path(element, "out") if element else ""
    err_path = store.output_path(element, "err") if element else ""
    stdout = read_range(store, element, "out", where[1]) if where else ""
    stderr = read_range(store, element, "err", where[2]) if where else ""
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
        failure=failure_of(store, call, attempt, result) if failed else None,
        element=shown,
        element_stderr=store.read_text(element_path) if shown else "",
        element_stderr_path=element_path,
    )


def _created(manifest: dict[str, Any]) -> float:
    created = manifest.get("created", 0.0)
    return float(created) if isinstance(created, (int, float)) and math.isfinite(created) else 0.0


def listing(names: Iterable[str]) -> str:
    """``a, b, c``: the first ten names, then "and N more"."""
    listed = list(names)
    more = f" and {len(listed) - _SHOWN} more" if len(listed) > _SHOWN else ""
    return ", ".join(listed[:_SHOWN]) + more
