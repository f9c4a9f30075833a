"""The records of an element's stream, as values (their table and JSON keys are in
:mod:`corral.store.streams`; their codec in :mod:`corral.store.stream_codec`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

Metric = float | int | str | bool | None


@dataclass(frozen=True, kw_only=True)
class Start:
    """An element (re)started: ``run`` is 0 the first time, +1 per requeue restart."""

    element: str
    host: str
    pid: int
    run: int
    out: int
    err: int
    t: float


@dataclass(frozen=True, kw_only=True)
class Claim:
    """The element took positions ``pos``..``pos+n-1`` of submission ``sub``'s task list."""

    sub: int
    pos: int
    n: int
    out: int
    err: int
    t: float


@dataclass(frozen=True, kw_only=True)
class Progress:
    """Where a running call is, as it said through ``corral.progress()``."""

    call: int
    attempt: int
    step: float | int
    total: float | int | None
    metrics: dict[str, Metric]
    t: float


@dataclass(frozen=True, kw_only=True)
class Result:
    """How a call ended: its value or exception pickled in ``payload`` (empty when
    ``in_file``: then it is in ``results/<call>.<attempt>.pkl``)."""

    call: int
    attempt: int
    ok: bool
    type_name: str
    message: str
    traceback: str
    host: str
    started: float
    finished: float
    out: int
    err: int
    in_file: bool
    payload: bytes


@dataclass(frozen=True, kw_only=True)
class Results:
    """A run of calls that all returned, each value small enough for the stream, with no
    output of their own: one record for many (the worker's hot path for trivial calls).
    ``calls[i]``, ``attempts[i]``, ``started[i]``, ``finished[i]`` and ``payloads[i]`` are
    call i's; ``out`` and ``err`` are the output files' sizes, the same at each of their
    Results (so each call's output range is empty). :meth:`each` gives them as Results."""

    host: str
    out: int
    err: int
    calls: tuple[int, ...]
    attempts: tuple[int, ...]
    started: tuple[float, ...]
    finished: tuple[float, ...]
    payloads: tuple[bytes, ...]

    def each(self) -> Iterator[Result]:
        """The run as one :class:`Result` per call, in order."""
        host, out, err = self.host, self.out, self.err
        for c, a, t0, t1, payload in zip(
            self.calls, self.attempts, self.started, self.finished, self.payloads, strict=True
        ):
            record = _new(Result)  # every field is checked already: no __init__ (see the codec)
            _setattr(record, "__dict__", {
                "call": c, "attempt": a, "ok": True, "type_name": "", "message": "", "traceback": "",
                "host": host, "started": t0, "finished": t1, "out": out, "err": err, "in_file": False,
                "payload": payload,
            })  # fmt: skip
            yield record


_new = object.__new__
_setattr = object.__setattr__


@dataclass(frozen=True, kw_only=True)
class Skip:
    """The element did not run this call: the client had cancelled it."""

    call: int
    attempt: int
    why: str


@dataclass(frozen=True, kw_only=True)
class Beat:
    """A heartbeat of a live element."""

    t: float


@dataclass(frozen=True, kw_only=True)
class End:
    """The element is done: its exit code, how many calls it ran and how many failed."""

    code: int
    ran: int
    failed: int
    t: float


Record = Start | Claim | Progress | Result | Results | Skip | Beat | End
