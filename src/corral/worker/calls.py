"""Running one call on the node: its arguments or its checkpoint, the signals that may stop
it, and what it came to (an :class:`~corral.store.batch.Outcome`), never raising for the
call's own errors."""

from __future__ import annotations

import contextvars
import os
import pickle
import sys
import time
from collections.abc import Callable
from typing import Any

import cloudpickle

from ..store.batch import BatchStore, Outcome
from ..store.pickling import PLAIN, dumps, load_call
from .checkpoint import Checkpointable, Interrupted, Resume, StopSignals
from .element_log import ElementLog
from .progress import enter_call, leave_call
from .setup import Prepared

_HOST = os.uname().nodename

#: The big values read lately, by hash: the calls of an element often share one. Each call
#: unpickles its own copy from these bytes (a call that changes its array changes no other's).
_read_blobs: dict[str, bytes] = {}
#: How many bytes of them are kept.
_KEPT = 256 << 20


def _blobs(store: BatchStore) -> Callable[[str], bytes]:
    """Where a call's big values come from: the batch's blobs, through the cache above."""

    def blob(key: str) -> bytes:
        data = _read_blobs.get(key)
        if data is None:
            data = store.read_blob(key)
            while _read_blobs and sum(map(len, _read_blobs.values())) + len(data) > _KEPT:
                del _read_blobs[next(iter(_read_blobs))]  # the oldest first
            _read_blobs[key] = data
        return data

    return blob


#: Set while a call runs in this process (the sequential backend); the env var covers jobs.
current_element: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "corral_current_element", default=None
)


def pack_function(fn: Callable[..., Any], pickler: Callable[[Any], bytes] = dumps) -> bytes:
    """Store a function with the client's ``sys.path``, so that modules found next to the
    user's script are found on the node too. ``pickler`` is corral's cloudpickle
    (:func:`corral.store.pickling.dumps`) or one that also refuses what cannot cross to a node."""
    return pickle.dumps({"sys_path": list(sys.path), "fn": pickler(fn)})


def unpack_function(data: bytes) -> Callable[..., Any]:
    blob = pickle.loads(data)
    for entry in blob["sys_path"]:
        if entry not in sys.path:
            sys.path.append(entry)
    fn: Callable[..., Any] = cloudpickle.loads(blob["fn"])
    return fn


def run_call(
    log: ElementLog,
    fn: Callable[..., Any],
    call: int,
    attempt: int,
    *,
    signals: StopSignals,
    max_requeues: int = 0,
    resumed: bool = False,
    payload: bytes | None = None,
) -> Outcome | None:
    """Run one call; never raises for the call's own errors (Stopped included). A call that
    ran before (``resumed``: after a requeue, or a later attempt) runs from its checkpoint
    if it has one; only such a call can have one, so the first run of every call does not
    look. ``payload``: the call's arguments as read already (else read here). None when a
    signal interrupted a checkpointable call and its checkpoint was saved."""
    store, element = log.store, log.element
    started = time.time()
    host = _HOST
    tokens = current_element.set(element), enter_call(log, store, call, attempt)
    try:
        if isinstance(fn, Prepared):  # the node setup first; the function itself, checkpointable or not
            fn.prepare()
            fn = fn.fn
        saved = store.read_checkpoint(call) if resumed else None
        requeues = 0
        if saved is None:
            args, kwargs = load_call(store.read_call(call) if payload is None else payload, _blobs(store))
        else:
            resume, requeues = cloudpickle.loads(saved[0]), saved[1]
            fn, args, kwargs = resume.fn, resume.args, resume.kwargs
            print(f"corral: call {call} resumes from its checkpoint", file=sys.stderr)
        checkpointable = isinstance(fn, Checkpointable)
        try:
            signals.begin(checkpointable, requeues < max_requeues)
            try:
                value = fn(*args, **kwargs)
            finally:
                signals.end()
        except Interrupted as stop:
            assert isinstance(fn, Checkpointable)
            _save_checkpoint(store, fn, call, args, kwargs, requeues + (not signals.terminated))
            log.note(f"corral: call {call} stopped ({stop.why}); checkpoint saved\n")
            return None
    except BaseException as exc:  # noqa: BLE001 - every failure of the call is its outcome
        import traceback  # only on failure: a worker's start-up time is every job's

        tb = traceback.format_exc()
        if log.redirects:
            sys.stderr.write(tb)  # beside the call's output; in-process, the client reports it
        return error_outcome(exc, tb, element, host, started)
    finally:
        leave_call(tokens[1])
        current_element.reset(tokens[0])
    try:
        # Plain values need none of cloudpickle's machinery (a tenth of the cost).
        result = pickle.dumps(value, 5) if type(value) in PLAIN else cloudpickle.dumps(value)
    except Exception as exc:  # noqa: BLE001
        import traceback

        tb = traceback.format_exc()
        return error_outcome(exc, tb, element, host, started, what="the result")
    return Outcome(True, result, element=element, host=host, started=started, finished=time.time())


def _save_checkpoint(
    store: BatchStore, fn: Checkpointable, call: int, args: Any, kwargs: Any, requeues: int
) -> None:
    """Ask the interrupted call for what to run next and keep it."""
    resume = fn.checkpoint(*args, **kwargs)
    if not isinstance(resume, Resume):
        raise TypeError(
            f"{type(fn).__qualname__}.checkpoint() must return a corral.Resume, not {type(resume).__name__}"
        )
    store.write_checkpoint(call, dumps(resume), requeues)


def error_outcome(
    exc: BaseException, tb: str, element: str, host: str, started: float, what: str = ""
) -> Outcome:
    """The outcome of a call that raised ``exc`` (or whose ``what`` could not be pickled)."""
    kind = type(exc)
    message = str(exc)
    if what:
        message = f"could not pickle {what}: {message}"
    try:
        payload = b"" if what else cloudpickle.dumps(exc)
    except Exception:  # noqa: BLE001 - the client gets a RemoteError with the text instead
        payload = b""
    return Outcome(
        False,
        payload,
        type_name=f"{kind.__module__}.{kind.__qualname__}",
        message=message,
        traceback=tb,
        element=element,
        host=host,
        started=started,
        finished=time.time(),
    )
