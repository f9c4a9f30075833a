"""An element's own files for one run: its stream of records and its calls' stdout/stderr.

``streams/<element>.log`` gets the records (:mod:`corral.store.streams`), appended one whole
frame per ``os.write``; ``streams/<element>.out`` and ``.err`` are opened once per run
(appended to, never followed through a link, 0600) and put on file descriptors 1 and 2 (and
``sys.stdout``/``sys.stderr``) for the whole run, so the calls' child processes write there
too. Every record that marks a place in them (Start, Claim, Result) carries both files' sizes,
taken after flushing Python's streams: a call's output is the range between the mark before
its Result and its Result's. Without redirection (the sequential backend, where a debugger
needs the terminal) every offset is 0.

Durability: an outcome is durable (survives the node's crash, not only the worker's) once
the log was synced after its Result: the log is synced when a chunk ends, after a Result when
0.25 s have passed since the last sync, and after End. A result too large for the stream is
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
from ..store.streams import RESULT_INLINE_MAX, Beat, Claim, End, Result, Skip, Start, StreamWriter

#: After a Result, the log is synced when this many seconds have passed since the last sync.
SYNC_EVERY = 0.25
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
        self._beating = threading.Event()
        self._beats: threading.Thread | None = None
        self._last_sync = time.monotonic()

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
        return os.fstat(self._outputs[0]).st_size, os.fstat(self._outputs[1]).st_size

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

    def start(self, run: int) -> None:
        """Write the run's Start and begin the heartbeat."""
        out, err = self.offsets()
        host = os.uname().nodename
        self.writer.write(
            Start(element=self.element, host=host, pid=os.getpid(), run=run, out=out, err=err, t=time.time())
        )
        self._beats = threading.Thread(target=self._beat_loop, name="corral-heartbeat", daemon=True)
        self._beats.start()

    def claim(self, sub: int, pos: int, n: int) -> None:
        out, err = self.offsets()
        self.writer.write(Claim(sub=sub, pos=pos, n=n, out=out, err=err, t=time.time()))

    def result(self, call: int, attempt: int, outcome: Outcome) -> None:
        """Write how the attempt ended; a payload above RESULT_INLINE_MAX goes to its own
        file first, synced, and the record points to it."""
        in_file = len(outcome.payload) > RESULT_INLINE_MAX
        if in_file:
            self.store.write_outcome(call, attempt, outcome, durable=True)
        out, err = self.offsets()
        self.writer.write(
            Result(
                call=call, attempt=attempt, ok=outcome.ok, type_name=outcome.type_name,
                message=outcome.message, traceback=outcome.traceback, host=outcome.host,
                started=float(outcome.started), finished=float(outcome.finished), out=out, err=err,
                in_file=in_file, payload=b"" if in_file else outcome.payload,
            )
        )  # fmt: skip
        if time.monotonic() - self._last_sync >= SYNC_EVERY:
            self.sync()

    def skip(self, call: int, attempt: int, why: str) -> None:
        self.writer.write(Skip(call=call, attempt=attempt, why=why))

    def sync(self) -> None:
        """Make every record written so far durable."""
        self.writer.sync()
        self._last_sync = time.monotonic()

    def end(self, code: int, ran: int, failed: int) -> None:
        """Stop the heartbeat, write End and sync: the run is over."""
        self._stop_beats()
        self.writer.write(End(code=code, ran=ran, failed=failed, t=time.time()))
        self.sync()

    def _beat_loop(self) -> None:
        while not self._beating.wait(self._beat):
            try:
                self.writer.write(Beat(t=time.time()))
            except OSError:  # the log is closed or the disk is full: the client will ask the scheduler
                return

    def _stop_beats(self) -> None:
        self._beating.set()
        if self._beats is not None:
            self._beats.join()
            self._beats = None

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        self._stop_beats()
        self.writer.close()
        if self._outputs is not None:
            for fd in self._outputs:
                os.close(fd)
            self._outputs = None

    def __enter__(self) -> ElementLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
