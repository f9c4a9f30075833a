"""How a call ended, as the worker recorded it, and the outcome file's format
(``results/<call>.<attempt>.pkl``: since format 2 only for a result too large for the
element's stream, see :data:`corral.store.streams.RESULT_INLINE_MAX`)."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """How one call ended, as the worker recorded it. Pickles travel as bytes so that a
    value or exception the client cannot unpickle is still reported, not lost."""

    ok: bool
    payload: bytes  # cloudpickled value (ok) or exception (not ok); may be b""
    type_name: str = ""  # the exception's qualified type name
    message: str = ""
    traceback: str = ""
    element: str = ""  # the array element that ran it
    host: str = ""
    started: float = 0.0
    finished: float = 0.0


#: The first line of every outcome file; a reader refuses anything else.
OUTCOME_MAGIC = b"corral-outcome 1\n"
_RECORD_FIELDS = ("ok", "type_name", "message", "traceback", "element", "host", "started", "finished")


def encode_outcome(outcome: Outcome) -> bytes:
    """An outcome as stored: the magic line, its data record as one JSON line (ASCII, so no
    text in it can break the line), then the pickled payload."""
    record = {name: getattr(outcome, name) for name in _RECORD_FIELDS}
    return OUTCOME_MAGIC + json.dumps(record, ensure_ascii=True).encode() + b"\n" + outcome.payload


def decode_outcome_file(data: bytes) -> Outcome:
    """The inverse of :func:`encode_outcome`; never unpickles. ``ValueError`` for a file that
    is not an outcome (truncated, foreign, or from another version of corral)."""
    if not data.startswith(OUTCOME_MAGIC):
        raise ValueError("not a corral outcome file")
    line, newline, payload = data[len(OUTCOME_MAGIC) :].partition(b"\n")
    if not newline:
        raise ValueError("truncated corral outcome file")
    record = json.loads(line)
    if not isinstance(record, dict):
        raise ValueError("malformed corral outcome record")
    ok, floats = record.get("ok"), ("started", "finished")
    texts = [n for n in _RECORD_FIELDS if n != "ok" and n not in floats]
    if not isinstance(ok, bool) or any(not isinstance(record.get(n, ""), str) for n in texts):
        raise ValueError("malformed corral outcome record")
    if any(not isinstance(record.get(n, 0.0), (int, float)) for n in floats):
        raise ValueError("malformed corral outcome record")
    values = {n: record[n] for n in _RECORD_FIELDS if n in record}
    return Outcome(payload=payload, **values)
