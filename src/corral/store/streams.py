"""The records of an element's stream, ``streams/<element>.log`` (element = ``<job>_<index>``).

Each array element appends the records of its calls to one log of its own, framed by
:mod:`corral.store.frames`; the client reads only what was appended since its last tick. A
frame's body is one line of ASCII JSON with its kind in ``"k"``, followed for a Result (and a
Results) by ``b"\\n"`` and the pickled value or exception (never unpickled here)::

    kind    record      JSON fields (short: a stream may hold 100,000 calls)
    start   Start       el host, h  pid, run, o e (stdout/stderr sizes), t
    claim   Claim       s sub, p pos, n  (positions pos..pos+n-1 of submission sub), o e, t
    prog    Progress    c call, a attempt, st step, tot total, m metrics, t
    out     Result      c a, ok, ty type_name, msg, tb, h, t0 started, t1 finished, o e, f in_file
    outs    Results     h, o e, and parallel lists c, a, t0, t1, n (payload lengths): a run of
                        calls that returned small values and printed nothing, their payloads
                        joined after the line
    skip    Skip        c a, why  (the element did not run the call: the client cancelled it)
    beat    Beat        t  (a live element's heartbeat)
    end     End         code, ran, fail, t

A call's stdout and stderr are the ranges of the element's files between the previous mark
(Start, Claim or Result) and its Result's ``o``/``e`` sizes. A payload above
:data:`RESULT_INLINE_MAX` lives in ``results/<call>.<attempt>.pkl`` (``f`` true, no payload);
the writer decides, writing and syncing that file before the record that points to it.

Decoding is strict: a whole, crc-valid frame whose body is not exactly a record (bad JSON,
unknown kind or field, a missing or mistyped field, a non-finite number, a negative call) is
a :class:`Foreign`, naming its call and attempt when they are readable, so that only that call
fails. A record is durable once :meth:`StreamWriter.sync` returned after its write.
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass

from ..trust import refusal
from .frames import MAX_BODY, Corrupt, FrameReader, scan_frames
from .stream_codec import (
    Beat,
    Claim,
    End,
    Foreign,
    Item,
    Metric,
    Progress,
    Record,
    Result,
    Results,
    Skip,
    Start,
    decode_body,
    decode_items,
    encode_record,
)

#: The largest pickled result kept in the stream itself: above it, the writer puts the
#: payload in ``results/<call>.<attempt>.pkl`` and writes a Result with ``in_file=True``.
RESULT_INLINE_MAX = 256 * 1024


class StreamReader:
    """The incremental decoder of one stream: feed it what was appended since the last feed
    (see :class:`~corral.store.frames.FrameReader` for ``offset``, ``position``, ``rewind``)."""

    def __init__(self, offset: int = 0) -> None:
        self._frames = FrameReader(offset)

    @property
    def offset(self) -> int:
        """The cursor to persist: everything before it has been decoded or reported."""
        return self._frames.offset

    @property
    def position(self) -> int:
        """The file offset of the next byte :meth:`feed` expects."""
        return self._frames.position

    def feed(self, data: bytes) -> list[tuple[int, Item]]:
        """The records, foreign bodies and damage now decided, as (file offset, item)."""
        return decode_items(self._frames.feed(data))

    def rewind(self) -> int:
        """Drop what is held past :attr:`offset`; return it (the next feed starts there)."""
        return self._frames.rewind()

    def finish(self) -> list[tuple[int, Item]]:
        """Decide what is held, for a stream whose writer is gone (a partial frame is damage)."""
        return decode_items(self._frames.finish())


def _open_private(path: str | os.PathLike[str], flags: int) -> int:
    """Open ``path`` without following a symbolic link nor blocking on a FIFO, and refuse
    anything but a regular file of the user's that nobody else can write."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
    try:
        info = os.fstat(fd)
        foreign = info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if not stat.S_ISREG(info.st_mode) or foreign:
            raise refusal(
                f"refusing the stream {os.fspath(path)}: it is not a regular file of yours that "
                "only you can write",
                path=os.fspath(path),
                owner=info.st_uid,
                mode=stat.S_IMODE(info.st_mode),
            )
        os.set_blocking(fd, True)  # O_NONBLOCK was only for the open itself
    except BaseException:
        os.close(fd)
        raise
    return fd


class StreamWriter:
    """The worker's end of its element's stream: appends whole frames, one ``os.write`` each
    (looping on a short write), under a lock shared by the heartbeat and the calls' thread.

    Before a restarted element appends, :func:`truncate_torn_tail` cuts off a frame a kill
    left half written."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd = _open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self._lock = threading.Lock()

    def write(self, record: Record) -> None:
        """Append ``record`` (not yet durable: see :meth:`sync`)."""
        data = memoryview(encode_record(record))
        with self._lock:
            while data:
                data = data[os.write(self._fd, data) :]

    def sync(self) -> None:
        """Make what was written durable (``fsync``)."""
        with self._lock:
            os.fsync(self._fd)

    def close(self) -> None:
        """Close the stream; closing twice is harmless."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> StreamWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def truncate_torn_tail(path: str | os.PathLike[str]) -> int:
    """Cut what follows the last whole frame of the stream at ``path`` (a frame a kill left
    half written); return how many bytes went. A missing stream has nothing to cut.

    A client may have read the torn bytes already: it holds them as a partial frame, never
    reported while more may come. So a client re-reads from its cursor when it holds
    anything past it (``if reader.position != reader.offset: reader.rewind()``), which sees
    the stream as the restarted writer made it rather than old bytes joined to new ones."""
    try:
        fd = _open_private(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        data = _read_all(fd)
        _, end = scan_frames(data, final=True)
        if end < len(data):
            os.ftruncate(fd, end)
            os.fsync(fd)
        return len(data) - end
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True, kw_only=True)
class ElementRuns:
    """What an element's own stream says it has done, for a restart to rerun only the rest."""

    next_run: int  # the ``run`` of the next Start: one more than the last
    claims: tuple[Claim, ...]  # every chunk it took, in order
    done: frozenset[tuple[int, int]]  # the (call, attempt) with a Result or a Skip
    failed: frozenset[tuple[int, int]]  # of those, the ones whose Result says it failed
    damaged: int  # how many foreign or corrupt records the stream holds


def read_element_runs(data: bytes) -> ElementRuns:
    """Read an element's whole stream ``data`` (a torn tail counts as damaged)."""
    reader = StreamReader()
    items = reader.feed(data) + reader.finish()
    runs = -1
    claims: list[Claim] = []
    done: set[tuple[int, int]] = set()
    failed: set[tuple[int, int]] = set()
    damaged = 0
    for _, item in items:
        if type(item) is Start:
            runs = max(runs, item.run)
        elif type(item) is Claim:
            claims.append(item)
        elif type(item) is Result or type(item) is Skip:
            done.add((item.call, item.attempt))
            if type(item) is Result and not item.ok:
                failed.add((item.call, item.attempt))
        elif type(item) is Results:
            done.update(zip(item.calls, item.attempts, strict=True))
        elif type(item) is Foreign or type(item) is Corrupt:
            damaged += 1
    return ElementRuns(
        next_run=runs + 1,
        claims=tuple(claims),
        done=frozenset(done),
        failed=frozenset(failed),
        damaged=damaged,
    )


__all__ = [
    "MAX_BODY",
    "RESULT_INLINE_MAX",
    "Beat",
    "Claim",
    "Corrupt",
    "ElementRuns",
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
    "StreamReader",
    "StreamWriter",
    "decode_body",
    "decode_items",
    "encode_record",
    "read_element_runs",
    "truncate_torn_tail",
]
