"""The fields of each kind of stream record and how each is checked: the table the codec
(:mod:`corral.store.stream_codec`) writes and reads by. Each check returns the value, or
raises :class:`Bad` saying why it is not one the record holds."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .stream_records import Beat, Claim, End, Metric, Progress, Record, Result, Skip, Start


class Bad(ValueError):
    """A field that is not what the record says it is."""


def _nat(v: Any) -> int:
    if type(v) is not int or v < 0:
        raise Bad(f"{v!r} is not an integer >= 0")
    return v


def _int(v: Any) -> int:
    if type(v) is not int:
        raise Bad(f"{v!r} is not an integer")
    return v


def _positive(v: Any) -> int:
    if type(v) is not int or v < 1:
        raise Bad(f"{v!r} is not an integer >= 1")
    return v


def _real(v: Any) -> float:
    if type(v) is float:
        if math.isfinite(v):
            return v
    elif type(v) is int:
        return float(v)
    raise Bad(f"{v!r} is not a finite number")


def _num(v: Any) -> float | int:
    if (type(v) is float and math.isfinite(v)) or type(v) is int:
        return v
    raise Bad(f"{v!r} is not a finite number")


def _opt_num(v: Any) -> float | int | None:
    return None if v is None else _num(v)


def _str(v: Any) -> str:
    if type(v) is not str:
        raise Bad(f"{v!r} is not a string")
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise Bad(f"{v!r} is not true or false")
    return v


def check_metrics(v: Any) -> dict[str, Metric]:
    if type(v) is not dict:
        raise Bad(f"{v!r} is not an object")
    for key, value in v.items():
        if type(key) is not str:
            raise Bad(f"metric name {key!r} is not a string")
        if value is not None and type(value) not in (str, bool):
            _num(value)
    return v


Check = Callable[[Any], Any]

#: Per kind: the record class and its fields as (attribute, JSON key, check), in JSON order.
# fmt: off
FIELDS: dict[str, tuple[type[Record], tuple[tuple[str, str, Check], ...]]] = {
    "start": (Start, (("element", "el", _str), ("host", "h", _str), ("pid", "pid", _nat),
                      ("run", "run", _nat), ("out", "o", _nat), ("err", "e", _nat), ("t", "t", _real))),
    "claim": (Claim, (("sub", "s", _nat), ("pos", "p", _nat), ("n", "n", _positive),
                      ("out", "o", _nat), ("err", "e", _nat), ("t", "t", _real))),
    "prog": (Progress, (("call", "c", _nat), ("attempt", "a", _nat), ("step", "st", _num),
                        ("total", "tot", _opt_num), ("metrics", "m", check_metrics), ("t", "t", _real))),
    "out": (Result, (("call", "c", _nat), ("attempt", "a", _nat), ("ok", "ok", _bool),
                     ("type_name", "ty", _str), ("message", "msg", _str), ("traceback", "tb", _str),
                     ("host", "h", _str), ("started", "t0", _real), ("finished", "t1", _real),
                     ("out", "o", _nat), ("err", "e", _nat), ("in_file", "f", _bool))),
    "skip": (Skip, (("call", "c", _nat), ("attempt", "a", _nat), ("why", "why", _str))),
    "beat": (Beat, (("t", "t", _real),)),
    "end": (End, (("code", "code", _int), ("ran", "ran", _nat), ("failed", "fail", _nat), ("t", "t", _real))),
}
# fmt: on
KIND_OF: dict[type[Record], str] = {cls: kind for kind, (cls, _) in FIELDS.items()}
