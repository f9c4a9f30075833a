"""Framing of an append-only stream: whole records in, whole records out, damage reported.

A stream (``streams/<element>.log``, see :mod:`corral.store.streams`) is a sequence of frames::

    offset  size  field
    0       2     MAGIC, b"\\xc7\\x1e"
    2       4     length of the body, uint32 little-endian, at most MAX_BODY
    6       4     zlib.crc32 of the body, uint32 little-endian
    10      n     body

A reader gets the bytes appended since its last look and may see a frame half written (the
writer is busy, or was killed mid-write). So a frame is decided only when all of it is there:
a whole frame whose crc checks out is a :class:`Frame`; a frame with a bad magic, a length
above :data:`MAX_BODY` or a crc mismatch is damage. After damage the reader resynchronises
on the next MAGIC after the damaged frame's first byte *whose frame checks out*, and reports
the bytes in between as one :class:`Corrupt`. A torn frame followed by whole ones (a worker
killed mid-write, its element restarted and appending again) so costs only the torn frame.

What is reported depends only on the bytes, never on how they were split between calls of
:meth:`FrameReader.feed`: a decision waits until the bytes it rests on have arrived. Hence a
Corrupt is reported only when the next whole frame arrives (or at :meth:`FrameReader.finish`,
when the writer is known to be gone), and the cursor :attr:`FrameReader.offset` always sits
right after a whole frame (or at the start): persisting it and reading on from it later
gives the same records as reading on without a break.

The price of waiting: a frame whose length was damaged into a plausible one (at most
MAX_BODY) holds back the frames after it until that many bytes came, or until
:meth:`~FrameReader.finish` says the stream is over and resolves them. And a body that holds a
whole frame (a result that is itself a stream) shows that inner frame as one of its own
should its enclosing frame be damaged: only a crc-valid frame is ever reported as a Frame.

Pure code: no I/O, no threads.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"\xc7\x1e"
HEADER_SIZE = 10
#: The largest body a frame may have: a larger length is corruption, not a frame to wait for
#: (results above :data:`corral.store.streams.RESULT_INLINE_MAX` live in files of their own).
MAX_BODY = 64 * 1024 * 1024

_HEADER = struct.Struct("<2sII")
_LENGTH_CRC = struct.Struct("<II")
_M0 = MAGIC[0]


@dataclass(frozen=True, slots=True)
class Frame:
    """A whole frame whose crc checks out: its body, and where the frame starts in the file."""

    offset: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Corrupt:
    """A damaged span of ``length`` bytes from ``offset``: nothing in it can be trusted."""

    offset: int
    length: int
    reason: str


def encode_frame(body: bytes) -> bytes:
    """The whole frame holding ``body``; ValueError when the body is above :data:`MAX_BODY`,
    since every reader would call such a frame corrupt."""
    if len(body) > MAX_BODY:
        raise ValueError(f"a frame body of {len(body)} bytes is above MAX_BODY ({MAX_BODY})")
    return _HEADER.pack(MAGIC, len(body), zlib.crc32(body)) + body


def _damage(buf: bytes | bytearray, pos: int, end: int) -> tuple[str, int]:
    """Why the frame at ``pos`` cannot be taken, and the bytes it needs first: ("", 0) for a
    whole good frame, ("", n) when it is not all there (n = its whole size), else (reason, 0)."""
    if end - pos < HEADER_SIZE:
        return "", HEADER_SIZE
    if buf[pos : pos + 2] != MAGIC:
        return f"bad magic {bytes(buf[pos : pos + 2]).hex()}", 0
    length, crc = _LENGTH_CRC.unpack_from(buf, pos + 2)
    if length > MAX_BODY:
        return f"length {length} above MAX_BODY", 0
    if end - pos < HEADER_SIZE + length:
        return "", HEADER_SIZE + length
    with memoryview(buf) as view:
        if zlib.crc32(view[pos + HEADER_SIZE : pos + HEADER_SIZE + length]) != crc:
            return "crc mismatch", 0
    return "", 0


class _State:
    """Where decoding stands between two feeds; the bytes themselves are kept by the caller."""

    __slots__ = ("damage", "reason")

    def __init__(self) -> None:
        #: Absolute offset where an unresolved damaged span starts (None: no damage pending).
        self.damage: int | None = None
        self.reason = ""


def _decode(
    buf: bytes | bytearray,
    base: int,
    state: _State,
    out: list[Frame | Corrupt],
    pos: int = 0,
    final: bool = False,
) -> tuple[int, int]:
    """Decode ``buf`` (whose first byte is at file offset ``base``) from ``pos`` into ``out``;
    return how many leading bytes are done with, and how many of the rest are needed before
    anything more can be decided. ``final``: no more bytes will come, so a frame that is not
    all there is damage too."""
    end = len(buf)
    unpack = _HEADER.unpack_from
    crc32 = zlib.crc32
    append = out.append
    search = pos  # where a resynchronisation carried over from the last feed looks first
    with memoryview(buf) as view:
        while True:
            if state.damage is None:
                # The hot path, inlined: a whole good frame at pos.
                if end - pos >= HEADER_SIZE:
                    magic, length, crc = unpack(buf, pos)
                    stop = pos + HEADER_SIZE + length
                    if magic == MAGIC and stop <= end and length <= MAX_BODY:
                        body = view[pos + HEADER_SIZE : stop]
                        if crc32(body) == crc:
                            append(Frame(base + pos, bytes(body)))
                            pos = stop
                            continue
                reason, need = _damage(buf, pos, end)
                if not reason:
                    if not final or pos == end:
                        return pos, need
                    reason = f"truncated frame ({end - pos} bytes)"
                state.damage, state.reason = base + pos, reason
                search = pos + 1
            # Resynchronise: the next MAGIC whose frame checks out ends the damaged span.
            while True:
                found = buf.find(MAGIC, search)
                if found < 0:
                    if final:
                        append(Corrupt(state.damage, base + end - state.damage, state.reason))
                        state.damage, state.reason = None, ""
                        return end, HEADER_SIZE
                    # Nothing to keep but a last byte that may begin a MAGIC.
                    keep = end - 1 if end > pos and buf[end - 1] == _M0 else end
                    return keep, 2 if keep < end else 1
                reason, need = _damage(buf, found, end)
                if need and not final:
                    return found, need
                if not reason and not need:
                    break
                search = found + 1
            append(Corrupt(state.damage, base + found - state.damage, state.reason))
            state.damage, state.reason = None, ""
            pos = found


class FrameReader:
    """The incremental decoder of one stream: feed it what was appended since the last feed.

    It holds at most one partial frame (plus, after damage, the candidate frame it is
    checking); :attr:`offset` is the cursor to persist, :attr:`position` the file offset of
    the next byte :meth:`feed` expects.
    """

    def __init__(self, offset: int = 0) -> None:
        self._base = offset
        self._buf = bytearray()
        self._need = 1
        self._state = _State()

    @property
    def offset(self) -> int:
        """Everything before this file offset has been decoded or reported."""
        return self._base if self._state.damage is None else self._state.damage

    @property
    def position(self) -> int:
        """The file offset of the next byte :meth:`feed` expects."""
        return self._base + len(self._buf)

    def feed(self, data: bytes) -> list[Frame | Corrupt]:
        """Decode the next ``data`` of the file: the whole frames and the damage now decided,
        in file order."""
        buf = self._buf
        if not buf and len(data) >= self._need:
            return self._run(data)  # the common tick: no partial frame left, no copy
        buf += data
        if len(buf) < self._need:
            return []
        return self._run(buf)

    def _run(self, buf: bytes | bytearray) -> list[Frame | Corrupt]:
        out: list[Frame | Corrupt] = []
        done, self._need = _decode(buf, self._base, self._state, out)
        self._base += done
        if buf is self._buf:
            del self._buf[:done]
        else:
            self._buf = bytearray(buf[done:])
        return out

    def rewind(self) -> int:
        """Forget what is held past :attr:`offset` and return it: the next :meth:`feed` must
        start there. For a reader that re-reads a partial tail in case its writer cut it off
        (:func:`corral.store.streams.truncate_torn_tail`) and appended anew."""
        self._base = self.offset
        self._buf = bytearray()
        self._need = 1
        self._state = _State()
        return self._base

    def finish(self) -> list[Frame | Corrupt]:
        """Decide what is held, for a stream whose writer is known to be gone: a frame that
        is not all there is damage, and the whole frames after it (if any) are found."""
        out: list[Frame | Corrupt] = []
        done, _ = _decode(self._buf, self._base, self._state, out, final=True)
        self._base += done
        self._buf, self._need = bytearray(), 1
        return out


def scan_frames(data: bytes, start: int = 0, *, final: bool = False) -> tuple[list[Frame | Corrupt], int]:
    """Decode a whole file ``data`` from offset ``start``: what :meth:`FrameReader.feed` (and
    :meth:`FrameReader.finish` if ``final``) would give, and the offset after the last whole
    frame (``start`` if there is none)."""
    state = _State()
    items: list[Frame | Corrupt] = []
    _decode(data, 0, state, items, start, final)
    last = next((item for item in reversed(items) if type(item) is Frame), None)
    return items, start if last is None else last.offset + HEADER_SIZE + len(last.body)
