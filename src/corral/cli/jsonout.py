"""``--json``: what the read commands print for programs, as documents with stable keys.

Every key below is part of the command's interface (docs/cli.md lists them); new keys may be
added, none is renamed or removed. Times are seconds since the epoch, statuses the lower-case
names ``corral status`` shows. The text is ASCII (``json.dumps`` escapes the rest), so no
value from a work dir can drive a terminal; it still passes through
:func:`~corral.cli.display.printable`, which then changes nothing.

One document per command (``status``, ``status BATCH``, ``logs``, ``sweep status``,
``doctor``); ``attach`` streams JSON lines, one object per line (see :mod:`.attaching`).
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..store.records import BatchSummary, CallLogs, CallStatus, Failure
from .display import printable


def emit(document: Any) -> None:
    """Print one JSON document (or one JSON line) on stdout."""
    print(printable(dumps(document)), flush=True)


def dumps(document: Any) -> str:
    """``document`` as one line of ASCII JSON; NaN and infinities as strings (strict JSON
    readers refuse them), anything else that is not JSON as its ``repr``."""
    return json.dumps(_finite(document), ensure_ascii=True, allow_nan=False, default=repr)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def counts(summary: BatchSummary) -> dict[str, int]:
    """Every status, 0 included: ``{"completed": 3, "failed": 1, ...}``."""
    return {status.value: n for status, n in summary.counts.items()}


def failure(f: Failure) -> dict[str, Any]:
    return {"call": f.call, "attempt": f.attempt, "type": f.type_name, "message": f.message}


def batch(summary: BatchSummary, *, detail: bool = False) -> dict[str, Any]:
    """A batch for ``status --json``: the listing's keys, and with ``detail`` (``status
    BATCH --json``) every call's status and the failures."""
    doc: dict[str, Any] = {
        "name": summary.name,
        "path": summary.path,
        "function": summary.function,
        "backend": summary.backend,
        "created": summary.created,
        "calls": summary.calls,
        "counts": counts(summary),
        "job_ids": list(summary.job_ids),
    }
    if detail:
        doc["statuses"] = [status.value for status in summary.statuses]
        doc["failures"] = [failure(f) for f in summary.failures]
        doc["lost"] = [call for call, s in enumerate(summary.statuses) if s is CallStatus.LOST]
    return doc


def unreadable(name: str, path: str, error: str) -> dict[str, Any]:
    """A batch folder that cannot be read, in a listing: its name, path and why."""
    return {"name": name, "path": path, "error": error}


def logs(found: CallLogs) -> dict[str, Any]:
    """``logs --json``: the call's attempt, status, output and failure."""
    return {
        "batch": found.batch,
        "call": found.call,
        "attempt": found.attempt,
        "status": found.status.value,
        "stdout": found.stdout,
        "stderr": found.stderr,
        "stdout_path": found.stdout_path,
        "stderr_path": found.stderr_path,
        "traceback": found.traceback,
        "failure": None if found.failure is None else failure(found.failure),
        "element": found.element,
        "element_stderr": found.element_stderr,
        "element_stderr_path": found.element_stderr_path,
    }


def value_line(call: int, value: Any) -> dict[str, Any]:
    """``attach --results``: ``{"call": i, "value": v}`` when ``v`` is JSON as it is (no
    NaN, no tuple turned into a list silently), else ``{"call": i, "repr": "..."}``."""
    if _is_json(value):
        return {"call": call, "value": value}
    return {"call": call, "repr": repr(value)}


def error_line(call: int, error: BaseException) -> dict[str, Any]:
    """``attach --results``: ``{"call": i, "error": "Type: message"}``."""
    return {"call": call, "error": f"{type(error).__name__}: {error}"}


def _is_json(value: Any, depth: int = 0) -> bool:
    """True when ``value`` survives a round trip through JSON unchanged."""
    if depth > 100:
        return False
    kind = type(value)  # exactly: a subclass (an enum, a named tuple) would come back changed
    if value is None or kind in (bool, int, str):
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(_is_json(v, depth + 1) for v in value)
    if kind is dict:
        return all(isinstance(k, str) and _is_json(v, depth + 1) for k, v in value.items())
    return False
