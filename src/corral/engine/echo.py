"""``echo=True``: the lines calls print, handed to the client as they arrive, each with the
index of the call that printed it.

An element's calls print into two files beside its stream, ``<element>.out`` and
``<element>.err`` (see :mod:`corral.store.elements`), one call after another; the stream's
records say where each call's output starts and ends. The tick's one scan reads what those
files grew by too (no request of its own), and :class:`Echo` gives each byte to the call
whose range holds it.

The scan reads the output files before the streams (see
:meth:`corral.transports.base.Transport.scan`), so every byte read was printed by a call whose
claim is in the stream as read: no byte goes to the wrong call. A call may end between the
two reads: the bytes it printed last are then read at once, with one more request, so that a
call's lines are all handed over before its future completes. A line is handed over once its
newline arrives, or when its call's output ended (the last line may have none). Bytes in no
call's range (the worker's own, between calls) are not echoed.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Mapping

from ..store.elements import ElementFiles
from ..store.replay import STREAM_SUFFIX, ElementLog, Event, Ran, RanAll, Replay

#: Where the lines go: (call, "out" or "err", the line without its newline).
Sink = Callable[[int, str, str], None]

log = logging.getLogger(__name__)

STREAMS = ("out", "err")
#: A line longer than this is handed over in pieces (a call printing without newlines).
LONGEST = 65536

Span = tuple[int, int | None]


class Echo:
    """The echo of one batch's calls (see the module docstring)."""

    def __init__(self, files: ElementFiles, replay: Replay, sink: Sink) -> None:
        self.files = files
        self.replay = replay
        self.sink = sink
        self._cursor: dict[str, int] = {}  # "<element>.out" -> how far it was read
        self._ended: dict[str, list[tuple[int, Span, Span]]] = {}  # element -> calls ended, in order
        self._held: dict[tuple[int, str], bytes] = {}  # a line waiting for its newline
        self._flushed: set[str] = set()  # elements gone whose last call's line was handed over

    def cursors(self) -> dict[str, int]:
        """Where the scan reads each output file from (one never read: from its start)."""
        return dict(self._cursor)

    def saw(self, event: Event) -> None:
        """A stream event of this tick: a call that ended keeps its range until its bytes
        were all read."""
        if isinstance(event, Ran):
            self._keep(event.element, event.call, event.attempt)
        elif isinstance(event, RanAll):
            for call, attempt in zip(event.run.calls, event.run.attempts, strict=True):
                self._keep(event.element, call, attempt)

    def _keep(self, element: str, call: int, attempt: int) -> None:
        where = self.replay.output(call, attempt)
        if where is not None and where[0] == element:
            self._ended.setdefault(element, []).append((call, where[1], where[2]))

    def take(self, appended: Mapping[str, bytes]) -> None:
        """Hand over the lines in what the output files grew by (after the streams of the
        same scan were fed, and :meth:`saw` told their events)."""
        for name, data in appended.items():
            element, _, stream = name.rpartition(".")
            log = self.replay.elements.get(element)
            if log is not None and stream in STREAMS and data and not name.endswith(STREAM_SUFFIX):
                self._give(log, stream, data)  # an element not seen yet: read again next tick
        self._catch_up()
        self._settle()

    def _give(self, log: ElementLog, stream: str, data: bytes) -> None:
        """The bytes of ``log``'s ``stream`` file from where it was read to, to their calls."""
        name = f"{log.element}.{stream}"
        start = self._cursor.get(name, 0)
        self._cursor[name] = start + len(data)
        for call, (low, high) in self._ranges(log, stream):
            lo, hi = max(low, start), start + len(data) if high is None else min(high, start + len(data))
            if lo < hi:
                self._feed(call, stream, data[lo - start : hi - start])

    def _catch_up(self) -> None:
        """Calls that ended after their output file was read: the rest of it, now."""
        for element, ended in self._ended.items():
            log = self.replay.elements[element]
            for i, stream in enumerate(STREAMS):
                end = max(spans[i][1] or 0 for spans in ((out, err) for _, out, err in ended))
                start = self._cursor.get(f"{element}.{stream}", 0)
                if end > start:
                    self._give(log, stream, self.files.read_output_range(element, stream, start, end))

    def _ranges(self, log: ElementLog, stream: str) -> list[tuple[int, Span]]:
        """Which call printed which bytes of ``log``'s ``stream``: the calls ended this
        tick and before, whose bytes are not all read yet, and the one running now."""
        i = STREAMS.index(stream)
        ranges = [(call, (out, err)[i]) for call, out, err in self._ended.get(log.element, [])]
        if log.queue and log.end is None:
            ranges.append((log.queue[0][0], (log.marks[i], None)))
        return ranges

    def _feed(self, call: int, stream: str, data: bytes) -> None:
        held = self._held.pop((call, stream), b"") + data
        *lines, rest = held.split(b"\n")
        for line in lines:
            self.sink(call, stream, line.decode(errors="replace"))
        while len(rest) > LONGEST:
            self.sink(call, stream, rest[:LONGEST].decode(errors="replace"))
            rest = rest[LONGEST:]
        if rest:
            self._held[(call, stream)] = rest

    def _settle(self) -> None:
        """Calls whose every byte was read give their last line, even without a newline; so
        does the call an element was running when it died."""
        for element, ended in list(self._ended.items()):
            left = []
            for call, out, err in ended:
                if all(self._read_to(element, s, span) for s, span in zip(STREAMS, (out, err), strict=True)):
                    self._flush(call)
                else:
                    left.append((call, out, err))
            if left:
                self._ended[element] = left
            else:
                del self._ended[element]
        for element, log in self.replay.elements.items():
            if log.finished and element not in self._flushed:
                self._flushed.add(element)
                if log.queue:  # its element died in the call: what it printed is all there is
                    self._flush(log.queue[0][0])

    def _read_to(self, element: str, stream: str, span: Span) -> bool:
        end = span[1]
        return end is not None and self._cursor.get(f"{element}.{stream}", 0) >= end

    def _flush(self, call: int) -> None:
        for stream in STREAMS:
            rest = self._held.pop((call, stream), b"")
            if rest:
                self.sink(call, stream, rest.decode(errors="replace"))


class Outbox:
    """The lines of an engine's batches, from the scan (under the engine's lock) to their
    sinks (outside it). A stdout that blocks (a pipe nobody reads) stalls only the thread
    that hands the lines over, as a full pipe stalls multiprocessing's workers; the engine's
    lock stays free, so submit and cancel go on. The engine hands the lines over before it
    completes the futures of the same look, so that a call's lines come before its result."""

    def __init__(self) -> None:
        self._lines: collections.deque[tuple[Sink, int, str, str]] = collections.deque()
        self._handing = threading.Lock()  # one thread at a time, so the lines keep their order
        self._failed = False

    def holding(self, sink: Sink | None) -> Sink | None:
        """A sink that keeps the lines for :meth:`hand_over` (None stays None)."""
        if sink is None:
            return None
        return lambda call, stream, line: self._lines.append((sink, call, stream, line))

    def hand_over(self) -> None:
        """Give every line kept so far to its sink, in order. A sink that raises (a closed
        stdout) loses that line, with one warning; the calls go on."""
        with self._handing:
            while self._lines:
                sink, call, stream, line = self._lines.popleft()
                try:
                    sink(call, stream, line)
                except Exception as exc:
                    if not self._failed:
                        log.warning("could not show the lines the calls print (echo): %s", exc)
                    self._failed = True
