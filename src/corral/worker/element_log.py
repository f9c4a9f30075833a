"""An element's own files for one run: its stream of records and its calls' stdout/stderr.

``streams/<element>.log`` gets the records (:mod:`corral.store.streams`), appended one whole
frame per ``os.write``; ``streams/<element>.out`` and ``.err`` are opened once per run
(appended to, never followed through a link, 0600) and put on file descriptors 1 and 2 (and
``sys.stdout``/``sys.stderr``) for the whole run, so the calls' child processes write there
too. Every record that marks a place in them (Start, Claim, Result) carries both files' sizes,
taken after flushing Python's streams: a call's output is the range between the mark before
its Result and its Result's. Without redirection (the sequential backend, where a debugger
needs the terminal) every offset is 0.

Runs of trivial calls: a call that returned a value of at most :data:`RUN_VALUE_MAX` bytes
and printed nothing joins the *run* of such calls, written as one Results record (one
encode and one ``os.write`` for many calls). A run is written when it holds
:data:`RUN_CALLS` calls or :data:`RUN_BYTES` bytes, when :data:`RUN_AGE` seconds have passed
since its first call returned (the heartbeat thread sees to that while a long call runs), and
before any other record. Until then its results exist only in the worker's memory: a worker
killed in that window loses them, and its calls run again or fail as the retry policy says,
as any call the worker had taken; a SIGTERM during a call writes the run first.

Durability: an outcome is durable (survives the node's crash, not only the worker's) once
the log was synced after its Result (or its run): the log is synced when a chunk ends, after
a Result when 0.25 s have passed since the last sync, and after End. A result too large for the stream is
written to its own file and synced *before* the Result that points to it. A worker killed
mid-write leaves at worst a torn last frame, which readers report as damage and the restarted
element cuts off (:func:`corral.store.streams.truncate_torn_tail`) before it appends.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator

from ..store.batch import BatchStore, Outcome
from ..store.protocol import BEAT
from ..store.streams import (
    RESULT_INLINE_MAX,
    Beat,
    Claim,
    End,
    Record,
    Result,
    Results,
    Skip,
    Start,
    StreamWriter,
)

#: After a Result, the log is synced when this many seconds have passed since the last sync.
SYNC_EVERY = 0.25
#: A run of trivial calls (see the module doc) is written at this many calls, bytes of
#: payloads, or seconds after its first call returned, whichever comes first.
RUN_CALLS = 1000
RUN_BYTES = 256 * 1024
RUN_AGE = 0.05
#: The largest value a call in a run may return (pickled); above it, a Result of its own.
RUN_VALUE_MAX = 4096
_OUTPUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC


class ElementLog:
    """What one run of an element writes; see the module doc. Use as a context manager:
    leaving it closes every file (without an End: :meth:`end` writes it)."""

    def __init__(self, store: BatchStore, element: str, *, redirect: bool, beat: float = BEAT) -> None:
        self.store = store
        self.element = element
        self.writer = StreamWriter(store.stream_path(element))
        self._outputs: tuple[int, int] | None = None
        if redirect:
            out = os.open(store.output_path(element, "out"), _OUTPUT_FLAGS, 0o600)
            try:
                err = os.open(store.output_path(element, "err"), _OUTPUT_FLAGS, 0o600)
            except BaseException:
                os.close(out)
                raise
            self._outputs = (out, err)
        self._saved_err: int | None = None  # the job's own stderr while the calls' is on fd 2
        self._beat = beat
        self._beating = threading.Event()  # set: the heartbeat ends
        self._wake = threading.Event()  # set: a run began, the heartbeat thread sees its age
        self._beats: threading.Thread | None = None
        self._last_sync = time.monotonic()
        # The run not written yet (see the module doc), shared with the heartbeat thread.
        self._lock = threading.Lock()
        self._run: tuple[list[int], list[int], list[float], list[float], list[bytes]] = ([], [], [], [], [])
        self._run_bytes = 0
        self._run_since = 0.0  # time.monotonic() when its first call returned
        self._host = os.uname().nodename
        self._mark = (-1, -1)  # output sizes at the last record written or in the run

    # -- output files -----------------------------------------------------------------------

    @property
    def redirects(self) -> bool:
        """True when the calls' output goes to the element's out and err files."""
        return self._outputs is not None

    def offsets(self) -> tuple[int, int]:
        """The sizes of the out and err files now, after flushing Python's streams."""
        if self._outputs is None:
            return 0, 0
        sys.stdout.flush()
        sys.stderr.flush()
        # The end of each file (opened O_APPEND, so its offset is no writer's concern): an int,
        # not a stat_result, on the hot path.
        return os.lseek(self._outputs[0], 0, os.SEEK_END), os.lseek(self._outputs[1], 0, os.SEEK_END)

    @contextlib.contextmanager
    def redirected(self) -> Iterator[None]:
        """Fds 1 and 2 and ``sys.stdout``/``sys.stderr`` on the output files (nothing
        without redirection), restored when it ends."""
        if self._outputs is None:
            yield
            return
        sys.stdout.flush()
        sys.stderr.flush()
        saved_fds = os.dup(1), os.dup(2)
        saved_streams = sys.stdout, sys.stderr
        os.dup2(self._outputs[0], 1)
        os.dup2(self._outputs[1], 2)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        self._saved_err = saved_fds[1]
        try:
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.close()
            sys.stdout, sys.stderr = saved_streams
            self._saved_err = None
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            for fd in saved_fds:
                os.close(fd)

    def note(self, text: str) -> None:
        """Tell the job's own stderr (the scheduler's file), not a call's output."""
        if self._saved_err is None:
            sys.stderr.write(text)
            sys.stderr.flush()
            return
        data = memoryview(text.encode(errors="replace"))
        while data:
            data = data[os.write(self._saved_err, data) :]

    # -- records ----------------------------------------------------------------------------

    def write(self, record: Record) -> None:
        """Append ``record`` after the run it follows (progress records come this way)."""
        with self._lock:
            self._write_run()
            self.writer.write(record)

    def start(self, run: int) -> None:
        """Write the run's Start and begin the heartbeat."""
        out, err = self.offsets()
        self.write(
            Start(
                element=self.element,
                host=self._host,
                pid=os.getpid(),
                run=run,
                out=out,
                err=err,
                t=time.time(),
            )
        )
        self._mark = (out, err)
        self._beats = threading.Thread(target=self._beat_loop, name="corral-heartbeat", daemon=True)
        self._beats.start()

    def claim(self, sub: int, pos: int, n: int) -> None:
        out, err = self.offsets()
        self.write(Claim(sub=sub, pos=pos, n=n, out=out, err=err, t=time.time()))
        self._mark = (out, err)

    def result(self, call: int, attempt: int, outcome: Outcome) -> None:
        """Write how the attempt ended: in the run when it returned a small value and
        printed nothing, else in a Result of its own; a payload above RESULT_INLINE_MAX goes
        to its own file first, synced, and the record points to it."""
        payload = outcome.payload
        marks = self.offsets()
        if outcome.ok and len(payload) <= RUN_VALUE_MAX and marks == self._mark:
            self._join_run(call, attempt, outcome)
            return
        in_file = len(payload) > RESULT_INLINE_MAX
        if in_file:
            self.store.write_outcome(call, attempt, outcome, durable=True)
            marks = self.offsets()
        out, err = marks
        self.write(
            Result(
                call=call, attempt=attempt, ok=outcome.ok, type_name=outcome.type_name,
                message=outcome.message, traceback=outcome.traceback, host=outcome.host,
                started=float(outcome.started), finished=float(outcome.finished), out=out, err=err,
                in_file=in_file, payload=b"" if in_file else payload,
            )
        )  # fmt: skip
        self._mark = marks  # after the write: the run before it ends at the previous mark
        if time.monotonic() - self._last_sync >= SYNC_EVERY:
            self.sync()

    def _join_run(self, call: int, attempt: int, outcome: Outcome) -> None:
        with self._lock:
            calls, attempts, started, finished, payloads = self._run  # the heartbeat may swap it
            if not calls:
                self._run_since = time.monotonic()
                self._wake.set()  # the heartbeat thread now also minds the run's age
            calls.append(call)
            attempts.append(attempt)
            started.append(float(outcome.started))
            finished.append(float(outcome.finished))
            payloads.append(outcome.payload)
            self._run_bytes += len(outcome.payload)
            if len(calls) >= RUN_CALLS or self._run_bytes >= RUN_BYTES:
                self._write_run()

    def _write_run(self) -> None:
        """Write the run as one Results record, if it holds any call (the lock is held)."""
        calls, attempts, started, finished, payloads = self._run
        if not calls:
            return
        out, err = self._mark
        self.writer.write(
            Results(
                host=self._host, out=out, err=err, calls=tuple(calls), attempts=tuple(attempts),
                started=tuple(started), finished=tuple(finished), payloads=tuple(payloads),
            )
        )  # fmt: skip
        self._run = ([], [], [], [], [])
        self._run_bytes = 0

    def flush(self) -> None:
        """Write the run now (a SIGTERM is about to end the process)."""
        with self._lock:
            self._write_run()

    def skip(self, call: int, attempt: int, why: str) -> None:
        self.write(Skip(call=call, attempt=attempt, why=why))

    def sync(self) -> None:
        """Write the run, and make every record written so far durable."""
        self.flush()
        self.writer.sync()
        self._last_sync = time.monotonic()

    def end(self, code: int, ran: int, failed: int) -> None:
        """Stop the heartbeat, write End and sync: the run is over."""
        self._stop_beats()
        self.write(End(code=code, ran=ran, failed=failed, t=time.time()))
        self.sync()

    def _beat_loop(self) -> None:
        """Every ``beat`` seconds a Beat; and a run that reached RUN_AGE is written, so a
        long call does not hold back the results of the trivial ones before it."""
        next_beat = time.monotonic() + self._beat
        while not self._beating.is_set():
            with self._lock:
                due = self._run_since + RUN_AGE if self._run[0] else None
            wake = next_beat if due is None else min(next_beat, due)
            if self._wake.wait(max(0.0, wake - time.monotonic())):
                self._wake.clear()  # a run began (or the heartbeat ends): look again
                continue
            now = time.monotonic()
            try:
                if due is not None and now >= due:
                    with self._lock:
                        if self._run[0] and now >= self._run_since + RUN_AGE:
                            self._write_run()
                if now >= next_beat:
                    self.writer.write(Beat(t=time.time()))
                    next_beat = now + self._beat
            except OSError:  # the log is closed or the disk is full: the client will ask the scheduler
                return

    def _stop_beats(self) -> None:
        self._beating.set()
        self._wake.set()
        if self._beats is not None:
            self._beats.join()
            self._beats = None

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        self._stop_beats()
        with contextlib.suppress(OSError):  # a run left by an error: its calls did end
            self.flush()
        self.writer.close()
        if self._outputs is not None:
            for fd in self._outputs:
                os.close(fd)
            self._outputs = None

    def __enter__(self) -> ElementLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
