"""The one reader of what a batch's elements wrote: their streams, ``streams/<element>.log``
(see :mod:`corral.store.streams`), turned into per-call facts.

The engine feeds it the bytes each tick's scan found appended (live), ``corral.attach`` and
``corral status`` feed it whole streams (a replay); either way the same records give the
same facts, in the same order:

* :class:`TookAll`: an element took a chunk of calls' attempts (a chunk claim names positions
  of its submission's task list; ``tasks_of`` turns them into calls);
* :class:`Ran`: a call's Result (the payload stays bytes: nothing is unpickled here), and
  :class:`RanAll`: a run of calls' Results in one record (:class:`~.stream_records.Results`);
* :class:`Skipped`: it did not run it (the client had cancelled it);
* :class:`Damaged`: a record that is not one corral wrote (a :class:`Foreign`, naming its
  call when readable) or bytes that are not a record at all (a :class:`Corrupt`).

The runs keep a 100,000-call tick to a few hundred events; :func:`each_call` gives them call
by call (:class:`Took` and :class:`Ran`) to a reader that wants no more.

It also keeps what a person may ask of a call at any moment, without another read: where its
output lies in its element's files (the range between the element's previous mark and the
call's Result), its latest progress, and when each element's stream last grew (the
element's heartbeat).
"""

from __future__ import annotations

import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from .frames import Corrupt
from .stream_codec import Beat, Claim, End, Foreign, Progress, Result, Results, Skip, Start
from .streams import StreamReader

STREAM_SUFFIX = ".log"
Span = tuple[int, int | None]  # a range of an output file: start, end (None: to its end)


@dataclass(frozen=True)
class Took:
    call: int
    attempt: int
    element: str


@dataclass(frozen=True)
class Ran:
    call: int
    attempt: int
    element: str
    result: Result


@dataclass(frozen=True)
class TookAll:
    element: str
    tasks: Sequence[tuple[int, int]]  # (call, attempt), in the claim's order


@dataclass(frozen=True)
class RanAll:
    element: str
    run: Results


@dataclass(frozen=True)
class Skipped:
    call: int
    attempt: int
    element: str


@dataclass(frozen=True)
class Damaged:
    element: str
    offset: int
    reason: str
    call: int | None = None
    attempt: int | None = None


Event = TookAll | Ran | RanAll | Skipped | Damaged
CallEvent = Took | Ran | Skipped | Damaged


def each_call(events: Iterable[Event]) -> Iterator[CallEvent]:
    """``events`` with each run given call by call: a :class:`TookAll` as one :class:`Took`
    per call, a :class:`RanAll` as one :class:`Ran` per call."""
    for event in events:
        if type(event) is TookAll:
            for call, attempt in event.tasks:
                yield Took(call, attempt, event.element)
        elif type(event) is RanAll:
            for result in event.run.each():
                yield Ran(result.call, result.attempt, event.element, result)
        else:
            yield event  # type: ignore[misc]


class ElementLog:
    """One element's stream as read so far."""

    def __init__(self, element: str) -> None:
        self.element = element
        self.reader = StreamReader()
        self.marks = (0, 0)  # stdout and stderr sizes at its last mark (Start, Claim, Result)
        self.queue: deque[tuple[int, int]] = deque()  # taken, not yet ended: the head runs
        self.grew_at = 0.0  # when its stream last grew (the element's heartbeat)
        self.start: Start | None = None  # its latest run's Start
        self.end: End | None = None  # its latest run's End (None while that run lasts)
        self.damaged: list[tuple[int, str]] = []  # (offset, reason) of what was not a record
        self.finished = False  # its element is gone: nothing more will be appended


class Replay:
    """Per-call facts from a batch's streams (see the module docstring). ``tasks_of(sub)``
    is submission ``sub``'s task list, (call, attempt) in plan order."""

    def __init__(self, n_calls: int, tasks_of: Callable[[int], Sequence[tuple[int, int]]]) -> None:
        self.n_calls = n_calls
        self.tasks_of = tasks_of
        self.elements: dict[str, ElementLog] = {}
        self._names: list[str] = []  # element names, indexed by the arrays below
        self._index: dict[str, int] = {}
        # The output range of each call's latest attempt that ended: element, out, err.
        self._where = array.array("i", [-1]) * n_calls
        self._out = array.array("q", [0, 0]) * n_calls
        self._err = array.array("q", [0, 0]) * n_calls
        self.progress: dict[int, Progress] = {}  # each call's latest, current attempt or not

    # -- reading --------------------------------------------------------------------------------

    def cursors(self) -> dict[str, int]:
        """Where the next read of each stream file starts (by file name). A reader holding a
        torn tail rewinds to its last whole record: a restarted element cuts that tail off
        before it appends (see :func:`corral.store.streams.truncate_torn_tail`)."""
        found = {}
        for log in self.elements.values():
            if log.reader.position != log.reader.offset:
                log.reader.rewind()
            found[log.element + STREAM_SUFFIX] = log.reader.offset
        return found

    def feed(self, name: str, data: bytes, now: float) -> Iterator[Event]:
        """Take in the bytes appended to stream file ``name`` since its cursor; the events
        come one at a time (a tick may hold 100,000 of them: none outlives its handling)."""
        if not name.endswith(STREAM_SUFFIX) or not data:
            return
        element = name[: -len(STREAM_SUFFIX)]
        log = self.elements.get(element)
        if log is None:
            log = self.elements[element] = ElementLog(element)
            self._index[element] = len(self._names)
            self._names.append(element)
        log.grew_at = now
        for offset, item in log.reader.feed(data):
            yield from self._take(log, offset, item)

    def finish(self, element: str) -> Iterator[Event]:
        """The element is gone for good: whatever its reader still holds (a record waiting
        for bytes that will never come, and the whole records behind it) is decided now."""
        log = self.elements.get(element)
        if log is None or log.finished:
            return
        log.finished = True
        for offset, item in log.reader.finish():
            yield from self._take(log, offset, item)

    def _take(self, log: ElementLog, offset: int, item: object) -> Iterator[Event]:
        kind = type(item)
        if kind is Results:
            assert isinstance(item, Results)
            self._ended_run(log, item)
            yield RanAll(log.element, item)
        elif kind is Result:
            assert isinstance(item, Result)
            self._ended(log, item.call, item.attempt, (item.out, item.err))
            yield Ran(item.call, item.attempt, log.element, item)
        elif kind is Claim:
            assert isinstance(item, Claim)
            log.marks = (item.out, item.err)
            tasks = self.tasks_of(item.sub)[item.pos : item.pos + item.n]
            log.queue.extend(tasks)
            yield TookAll(log.element, tasks)
        elif kind is Progress:
            assert isinstance(item, Progress)
            self.progress[item.call] = item
        elif kind is Skip:
            assert isinstance(item, Skip)
            self._ended(log, item.call, item.attempt, None)
            yield Skipped(item.call, item.attempt, log.element)
        elif kind is Start:
            assert isinstance(item, Start)
            log.start, log.end = item, None
            if not log.queue:  # a call re-run after a restart keeps its earlier runs' output
                log.marks = (item.out, item.err)
        elif kind is End:
            assert isinstance(item, End)
            log.end = item
        elif isinstance(item, Foreign):
            log.damaged.append((offset, item.reason))
            yield Damaged(log.element, offset, item.reason, item.call, item.attempt)
        elif isinstance(item, Corrupt):
            log.damaged.append((offset, item.reason))
            yield Damaged(log.element, offset, item.reason)
        elif kind is not Beat:  # pragma: no cover - the codec yields nothing else
            raise TypeError(f"unexpected stream item {item!r}")

    def _ended(self, log: ElementLog, call: int, attempt: int, ends: tuple[int, int] | None) -> None:
        """A call of ``log`` ended (a Result with its output's end, or a Skip)."""
        try:
            log.queue.remove((call, attempt))
        except ValueError:
            pass  # a rerun after a restart, or a record of a claim this reader never saw
        if ends is None or not 0 <= call < self.n_calls:
            return
        self._where[call] = self._index[log.element]
        self._out[2 * call], self._out[2 * call + 1] = log.marks[0], ends[0]
        self._err[2 * call], self._err[2 * call + 1] = log.marks[1], ends[1]
        log.marks = ends

    def _ended_run(self, log: ElementLog, run: Results) -> None:
        """:meth:`_ended` for each call of a run, in order: they share their output's end
        (none of them printed), so each range after the first is empty."""
        queue, where, out, err = log.queue, self._where, self._out, self._err
        index, n_calls = self._index[log.element], self.n_calls
        o, e = run.out, run.err
        mark_o, mark_e = log.marks
        for task in zip(run.calls, run.attempts, strict=True):
            if queue and queue[0] == task:
                queue.popleft()  # the usual order: the run's calls are the chunk's, in order
            else:
                try:
                    queue.remove(task)
                except ValueError:
                    pass  # a rerun after a restart, or a record of a claim this reader never saw
            call = task[0]
            if 0 <= call < n_calls:
                where[call] = index
                out[2 * call], out[2 * call + 1] = mark_o, o
                err[2 * call], err[2 * call + 1] = mark_e, e
                mark_o, mark_e = o, e
        log.marks = (mark_o, mark_e)

    # -- questions ------------------------------------------------------------------------------

    def output(self, call: int, attempt: int) -> tuple[str, Span, Span] | None:
        """Where the call's output lies: (element, (out start, end), (err start, end)), an
        end None while it runs (to the end of the files); None when it has not started."""
        for log in self.elements.values():
            if log.queue and log.queue[0] == (call, attempt) and log.end is None:
                return log.element, (log.marks[0], None), (log.marks[1], None)
        where = self._where[call] if 0 <= call < self.n_calls else -1
        if where < 0:
            return None
        out, err = self._out, self._err
        return self._names[where], (out[2 * call], out[2 * call + 1]), (err[2 * call], err[2 * call + 1])

    def element_of(self, call: int) -> str | None:
        """The element whose Result of the call was read last."""
        where = self._where[call] if 0 <= call < self.n_calls else -1
        return None if where < 0 else self._names[where]
