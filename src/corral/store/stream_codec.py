"""The codec of the records of an element's stream (the table is in :mod:`corral.store.streams`,
the fields' checks in :mod:`corral.store.stream_fields`).

Encoding checks every field as decoding does, so nothing written comes back Foreign. Decoding
is strict (bool is not int, an int field takes no float, numbers are finite, call and attempt
are >= 0, no field missing or unknown) and never raises: what is not a record is a
:class:`Foreign`. The hot path is a tick's worth of Results: their JSON lines are parsed in one
call and checked by one expression; anything unusual takes the table and its reasons.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .frames import Corrupt, Frame, encode_frame
from .stream_fields import FIELDS, KIND_OF, Bad, check_metrics
from .stream_records import Beat, Claim, End, Metric, Progress, Record, Result, Results, Skip, Start

_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class Foreign:
    """A whole, crc-valid frame whose body is no record of ours; ``call`` and ``attempt``
    when the body names them readably, so that exactly that call can fail."""

    offset: int
    reason: str
    call: int | None = None
    attempt: int | None = None


def _reject_constant(name: str) -> None:
    raise Bad(f"{name} is not a finite number")


#: The C scanner behind json.loads, called directly (see decode_body).
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder(parse_constant=_reject_constant).scan_once  # type: ignore[attr-defined]
_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False)
_esc: Callable[[str], str] = json.encoder.encode_basestring_ascii
_repr = float.__repr__
_JSON_BOOL = {True: "true", False: "false"}


def encode_record(record: Record) -> bytes:
    """The whole frame holding ``record``; ValueError for a field no reader would accept
    (a NaN, a metric that is not a number, string, bool or None, an inline payload with
    ``in_file``), so that nothing written can come back Foreign."""
    if type(record) is Result:
        frame = _fast_encode_result(record)
        if frame is not None:
            return frame
    elif type(record) is Progress:
        frame = _fast_encode_progress(record)
        if frame is not None:
            return frame
    elif type(record) is Results:
        return _encode_results(record)
    kind = KIND_OF[type(record)]
    head: dict[str, Any] = {"k": kind}
    try:
        for attr, key, check in FIELDS[kind][1]:
            head[key] = check(getattr(record, attr))
    except Bad as bad:
        raise ValueError(f"cannot write {record!r}: {attr} {bad}") from None
    line = _ENCODER.encode(head).encode("ascii")
    if type(record) is Result:
        if record.in_file and record.payload:
            raise ValueError(f"Result of call {record.call} has a payload and in_file")
        return encode_frame(line + b"\n" + bytes(record.payload))
    return encode_frame(line)


def _fast_encode_result(r: Result) -> bytes | None:
    """The frame of a Result whose fields are exactly what the writer writes (checked in
    one expression, as :func:`_fast_result` reads them), else None: the worker writes one
    per call, so this is its hot path; anything unusual takes the table and its reasons."""
    c, a, o, e, t0, t1 = r.call, r.attempt, r.out, r.err, r.started, r.finished
    # fmt: off
    if not (
        type(c) is int and c >= 0 and type(a) is int and a >= 0
        and type(o) is int and o >= 0 and type(e) is int and e >= 0
        and type(t0) is float and _isfinite(t0) and type(t1) is float and _isfinite(t1)
        and type(r.ok) is bool and type(r.in_file) is bool and not (r.in_file and r.payload)
        and type(r.type_name) is str and type(r.message) is str and type(r.traceback) is str
        and type(r.host) is str
    ):
        return None
    # The line _ENCODER would make, formatted directly (half the cost): the same separators,
    # ASCII strings escaped by json's own C escaper, floats by the repr json uses.
    line = (
        f'{{"k":"out","c":{c},"a":{a},"ok":{_JSON_BOOL[r.ok]},"ty":{_esc(r.type_name)},'
        f'"msg":{_esc(r.message)},"tb":{_esc(r.traceback)},"h":{_esc(r.host)},"t0":{_repr(t0)},'
        f'"t1":{_repr(t1)},"o":{o},"e":{e},"f":{_JSON_BOOL[r.in_file]}}}'
    )
    return encode_frame(line.encode("ascii") + b"\n" + bytes(r.payload))


def _encode_results(r: Results) -> bytes:
    """The frame of a Results: one JSON line of parallel lists, then the payloads joined
    (their lengths in ``n``). ValueError for what :func:`_decode_results` would refuse."""
    calls, attempts, t0, t1, payloads = r.calls, r.attempts, r.started, r.finished, r.payloads
    n = len(calls)
    # fmt: off
    if not (
        n and len(attempts) == n and len(t0) == n and len(t1) == n and len(payloads) == n
        and type(r.host) is str and type(r.out) is int and r.out >= 0 and type(r.err) is int and r.err >= 0
        and _all_nat(calls) and _all_nat(attempts) and _all_finite(t0) and _all_finite(t1)
    ):
        raise ValueError(f"cannot write {r!r}: not a run of calls a reader would accept")
    line = (
        f'{{"k":"outs","h":{_esc(r.host)},"o":{r.out},"e":{r.err},"c":[{",".join(map(str, calls))}],'
        f'"a":[{",".join(map(str, attempts))}],"t0":[{",".join(map(_repr, t0))}],'
        f'"t1":[{",".join(map(_repr, t1))}],"n":[{",".join([str(len(p)) for p in payloads])}]}}'
    )
    # fmt: on
    return encode_frame(line.encode("ascii") + b"\n" + b"".join(payloads))


def _all_nat(values: Any) -> bool:
    return all(type(x) is int and x >= 0 for x in values)


def _all_finite(values: Any) -> bool:
    return all(type(x) is float and _isfinite(x) for x in values)


def _nats(v: Any, n: int) -> bool:
    return type(v) is list and len(v) == n and _all_nat(v)


def _finites(v: Any, n: int) -> bool:
    return type(v) is list and len(v) == n and _all_finite(v)


def _decode_results(offset: int, head: dict[str, Any], body: bytes, start: int) -> Results | Foreign:
    """The Results in ``head`` (its payloads from ``start`` in ``body``), or a Foreign: a
    run's fields are checked as a whole (no call of it is named, none can be trusted)."""
    calls, lengths = head.get("c"), head.get("n")
    n = len(calls) if type(calls) is list else 0
    host, out, err = head.get("h"), head.get("o"), head.get("e")
    # fmt: off
    if not (
        len(head) == 9 and n and start > 0 and body[start - 1 : start] == b"\n"
        and _nats(calls, n) and _nats(head.get("a"), n)
        and _finites(head.get("t0"), n) and _finites(head.get("t1"), n) and _nats(lengths, n)
        and type(host) is str and type(out) is int and out >= 0 and type(err) is int and err >= 0
    ):
        return Foreign(offset, "bad outs record: a field missing, unknown or mistyped")
    # fmt: on
    assert isinstance(lengths, list) and isinstance(calls, list)
    if start + sum(lengths) != len(body):
        return Foreign(offset, "bad outs record: its payloads' lengths do not add up")
    payloads = []
    for size in lengths:
        payloads.append(body[start : start + size])
        start += size
    return _build(Results, {
        "host": host, "out": out, "err": err, "calls": tuple(calls), "attempts": tuple(head["a"]),
        "started": tuple(head["t0"]), "finished": tuple(head["t1"]), "payloads": tuple(payloads),
    })  # fmt: skip


def _fast_encode_progress(p: Progress) -> bytes | None:
    """As :func:`_fast_encode_result`, for a Progress (a call may write thousands)."""
    c, a, st, tot, t, m = p.call, p.attempt, p.step, p.total, p.t, p.metrics
    # fmt: off
    if not (
        type(c) is int and c >= 0 and type(a) is int and a >= 0 and type(t) is float and _isfinite(t)
        and (type(st) is int or (type(st) is float and _isfinite(st)))
        and (tot is None or type(tot) is int or (type(tot) is float and _isfinite(tot)))
        and type(m) is dict
    ):
        return None
    # fmt: on
    try:
        metrics = _ENCODER.encode(check_metrics(m))  # allow_nan=False: ValueError for a NaN
    except (Bad, ValueError):
        return None  # the table says why
    total = "null" if tot is None else _ENCODER.encode(tot)
    step = _ENCODER.encode(st)
    line = f'{{"k":"prog","c":{c},"a":{a},"st":{step},"tot":{total},"m":{metrics},"t":{_repr(t)}}}'
    return encode_frame(line.encode("ascii"))


def _readable(head: Any, key: str) -> int | None:
    value = head.get(key) if type(head) is dict else None
    return value if type(value) is int and value >= 0 else None


def _fast_result(head: dict[str, Any], body: bytes, start: int) -> Result | None:
    """The Result in ``head`` (its payload from ``start`` in ``body``) when every field is
    exactly what the writer writes, else None (then the table decides, and says why): a
    100,000-call stream is mostly Results, so this one is checked in one expression."""
    try:
        c, a, ok, f = head["c"], head["a"], head["ok"], head["f"]
        ty, msg, tb, h = head["ty"], head["msg"], head["tb"], head["h"]
        t0, t1, o, e = head["t0"], head["t1"], head["o"], head["e"]
    except KeyError:
        return None
    # fmt: off
    if not (
        len(head) == 13 and start <= len(body)
        and type(c) is int and c >= 0 and type(a) is int and a >= 0
        and type(ok) is bool and type(f) is bool
        and type(ty) is str and type(msg) is str and type(tb) is str and type(h) is str
        and type(t0) is float and _isfinite(t0) and type(t1) is float and _isfinite(t1)
        and type(o) is int and o >= 0 and type(e) is int and e >= 0
    ):
        return None
    payload = body[start:]
    if f and payload:
        return None
    record = _new(Result)  # as _build does, inlined on the hot path
    _setattr(record, "__dict__", {
        "call": c, "attempt": a, "ok": ok, "type_name": ty, "message": msg, "traceback": tb, "host": h,
        "started": t0, "finished": t1, "out": o, "err": e, "in_file": f, "payload": payload,
    })
    # fmt: on
    return record


def _build(cls: type[_R], values: dict[str, Any]) -> _R:
    # Every field was checked already; a frozen dataclass's __init__ would spend more than
    # the JSON parse on setting them one by one through object.__setattr__.
    record = _new(cls)
    _setattr(record, "__dict__", values)  # ``values`` becomes the record's own: no copy
    return record


_new = object.__new__
_setattr = object.__setattr__
_isfinite = math.isfinite


def _decode_fields(offset: int, head: dict[str, Any], body: bytes, cut: int) -> Record | Foreign:
    kind = head.get("k")
    spec = FIELDS.get(kind) if type(kind) is str else None
    if spec is None:
        return Foreign(offset, f"unknown record kind {kind!r}", _readable(head, "c"), _readable(head, "a"))
    cls, fields = spec
    values: dict[str, Any] = {}
    try:
        for attr, key, check in fields:
            if key not in head:
                raise Bad(f"no field {key!r}")
            try:
                values[attr] = check(head[key])
            except Bad as bad:
                raise Bad(f"field {key!r}: {bad}") from None
        if len(head) != len(fields) + 1:
            raise Bad(f"unknown fields {sorted(set(head) - {'k'} - {f[1] for f in fields})}")
        if cls is Result:
            values["payload"] = b"" if cut < 0 else body[cut + 1 :]
            if values["in_file"] and values["payload"]:
                raise Bad("a payload in the stream and in_file")
        elif cut >= 0:
            raise Bad("a payload after a record that has none")
    except Bad as bad:
        return Foreign(offset, f"bad {kind} record: {bad}", _readable(head, "c"), _readable(head, "a"))
    return _build(cls, values)


def decode_body(offset: int, body: bytes) -> Record | Foreign:
    """The record in the body of the frame at ``offset``, or a Foreign saying why not."""
    cut = body.find(b"\n")
    try:
        # White space around the value is what the joined parse of _decode_all lets pass.
        text = (body if cut < 0 else body[:cut]).decode("ascii").strip(" \t\r")
        # The scanner json.loads uses, without its per-call Python layers; the value must
        # end where the line does.
        head, end = _scan(text, 0)
        if end != len(text):
            raise Bad(f"extra data at byte {end}")
    except StopIteration:
        return Foreign(offset, "not a JSON record")
    except (ValueError, RecursionError) as error:
        return Foreign(offset, f"not a JSON record: {error}")
    return _decode_head(offset, head, body)


def _decode_head(offset: int, head: Any, body: bytes) -> Record | Foreign:
    if type(head) is not dict:
        return Foreign(offset, f"not a JSON object: {type(head).__name__}")
    cut = body.find(b"\n")
    kind = head.get("k")
    if kind == "out" and cut >= 0:
        record = _fast_result(head, body, cut + 1)
        if record is not None:
            return record
    elif kind == "outs":
        return _decode_results(offset, head, body, cut + 1)
    return _decode_fields(offset, head, body, cut)


def _decode_all(frames: list[Frame]) -> list[Record | Foreign]:
    """The records in ``frames``, with one JSON parse for all their lines (the parse is most
    of the cost of a tick, and one call shares the key strings); if that parse fails or
    finds another number of values, each body is decoded on its own, to say which are bad.

    A line spilling into the next in the joined array (``[1`` then ``2]``) needs bodies
    crafted to pass the crc: only the worker writes its stream, and whoever could craft
    them could as well write any record."""
    lines = [frame.body.partition(b"\n")[0] for frame in frames]
    joined = b"[" + b",".join(lines) + b"]"
    try:
        heads, end = _scan(joined.decode("ascii"), 0)
    except (StopIteration, ValueError, RecursionError):
        heads, end = [], -1
    if end != len(joined) or len(heads) != len(frames):
        return [decode_body(frame.offset, frame.body) for frame in frames]
    records: list[Record | Foreign] = []
    for frame, line, head in zip(frames, lines, heads, strict=True):
        record: Record | Foreign | None = None
        if type(head) is dict:
            kind = head.get("k")
            if kind == "out":
                record = _fast_result(head, frame.body, len(line) + 1)
            elif kind == "outs":
                record = _decode_results(frame.offset, head, frame.body, len(line) + 1)
        records.append(record or _decode_head(frame.offset, head, frame.body))
    return records


Item = Record | Foreign | Corrupt


def decode_items(items: list[Frame | Corrupt]) -> list[tuple[int, Item]]:
    """What :class:`~corral.store.frames.FrameReader` gave, with each frame's record decoded."""
    frames = [item for item in items if type(item) is Frame]
    records = _decode_all(frames)
    if len(frames) == len(items):
        return [(frame.offset, record) for frame, record in zip(frames, records, strict=True)]
    decoded = iter(records)
    return [(item.offset, item if isinstance(item, Corrupt) else next(decoded)) for item in items]


__all__ = [
    "Beat",
    "Claim",
    "End",
    "Foreign",
    "Item",
    "Metric",
    "Progress",
    "Record",
    "Result",
    "Results",
    "Skip",
    "Start",
    "decode_body",
    "decode_items",
    "encode_record",
]
