"""A transport whose every operation is one request to an agent (:mod:`.agent`) at the other
end of a pipe: a local subprocess in tests, ``ssh HOST python -m corral.transports.agent``
for a remote host (:mod:`.ssh`). One request at a time, answered in order, over one session
that is started at the first request and kept.

Each new session is checked with a ``hello`` before any request goes over it, so a session
that cannot start never carries a request: what breaks is either the start (nothing was
sent) or a request in flight (it may or may not have been carried out).

When a session breaks (a laptop that slept, a network that changed, a master connection
closed), the next request starts another:

- the **first** session of a transport is started once with ``argv`` (ssh may ask for a
  passphrase or a code, as usual); whatever stops it is raised at once as :class:`AgentLost`,
  saying what went wrong and what to do (see :meth:`AgentTransport.diagnose`). A wrong host,
  an unknown host key, a missing python or corral is what a first session meets, and the
  person who just started the program is there to read it; nothing is waiting on results yet.
- **later** sessions are started with ``reconnect_argv`` (for ssh: ``BatchMode=yes``, so that
  they never ask anything on a terminal nobody may watch), and a failed start is tried again
  with backoff (:class:`~.policy.Backoff`: 1, 2, 4 ... 60 s, with jitter), whatever the
  failure, for up to ``max_wait`` seconds (None: as long as it takes; 0: one try): once per
  kind of failure a warning says what is wrong and what to do (a login that needs a person,
  a host key that changed: corral never accepts one), and the process goes on by itself once
  it is fixed.
- a request in flight when its session broke is sent again on a new session only when that
  is safe (:data:`~.policy.RESEND`); otherwise :class:`AgentLost` is raised with ``in_flight``.

What the agent writes to its standard error (and what ``ssh`` says there) is kept, its last
lines quoted in the :class:`AgentLost` raised.
"""

from __future__ import annotations

import collections
import logging
import random
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from ..errors import CorralError
from .base import CommandResult, Scan
from .policy import MAX_RESENDS, Backoff, resends
from .wire import WireError, encode, read_message, rebuild_error

log = logging.getLogger(__name__)


class AgentLost(CorralError, ConnectionError):
    """The session with the agent ended or broke, or no new one could be started; ``stderr``
    is what the agent (or ssh) said last. With ``in_flight``, the request had been sent and
    may or may not have been carried out; without, it was never sent. A ``ConnectionError``
    (an ``OSError``): code that treats an unreadable file as "try again later" does the same
    for a lost connection."""

    transient = True

    def __init__(self, message: str, stderr: str = "", *, in_flight: bool = False) -> None:
        super().__init__(message + (f"\n{stderr}" if stderr else ""))
        self.stderr = stderr
        self.in_flight = in_flight


class _Broken(Exception):
    """A session broke with a request in flight."""


class _NoStart(Exception):
    """A new session did not answer its hello; ``said`` is what it wrote on stderr."""

    def __init__(self, said: str) -> None:
        super().__init__(said)
        self.said = said


class _Session:
    """One agent process, and the last lines it wrote to its standard error."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C at the terminal is the client's, not the session's
        )  # fmt: skip
        self.said: collections.deque[str] = collections.deque(maxlen=40)
        assert self.proc.stderr is not None
        self._reader = threading.Thread(target=self._keep, args=(self.proc.stderr,), daemon=True)
        self._reader.start()

    def _keep(self, stream: IO[bytes]) -> None:
        for line in stream:
            self.said.append(line.decode(errors="replace").rstrip("\r\n"))

    def text(self) -> str:
        return "\n".join(self.said)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ask(self, ident: int, frame: bytes) -> dict[str, Any]:
        """Send one encoded request and read its answer; :class:`_Broken` if the session breaks."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(frame)
            self.proc.stdin.flush()
            answer = read_message(self.proc.stdout)
        except (OSError, WireError) as exc:
            raise _Broken(str(exc)) from exc
        if answer is None:
            raise _Broken("the session ended")
        if answer.get("id") != ident:
            raise _Broken(f"it answered request {answer.get('id')}, not {ident}")
        return answer

    def end(self) -> str:
        """Close the session (the agent sees its input end and exits); what it said."""
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=2)  # the rest of its stderr
        return self.text()


class AgentTransport:
    """:class:`~corral.transports.base.Transport` through an agent started by ``argv`` (the
    first session) or ``reconnect_argv`` (later ones; ``argv`` when not given). ``max_wait``:
    how long a request waits for a new session once one broke (None: as long as it takes;
    0: one try); ``backoff``, ``clock``, ``sleep`` and ``rng`` pace those tries (tests give
    their own). See the module doc."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str = "agent",
        reconnect_argv: Sequence[str] | None = None,
        max_wait: float | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.argv = list(argv)
        self.reconnect_argv = list(reconnect_argv) if reconnect_argv is not None else list(argv)
        self.name = name
        self.max_wait = max_wait
        self.backoff = backoff or Backoff()
        self._clock, self._sleep, self._rng = clock, sleep, rng or random.Random()
        self._session: _Session | None = None
        self._said = ""  # what the last session that ended said
        self._connected = False  # a session has worked: the next ones are reconnections
        self._lock = threading.Lock()
        self._next_id = 0

    # -- sessions ------------------------------------------------------------------------------

    def said(self) -> str:
        """The last lines the agent (or ssh) wrote to its standard error."""
        session = self._session
        return session.text() if session is not None else self._said

    def diagnose(self, said: str, *, reconnecting: bool = False) -> str:
        """For a person: why a session that wrote ``said`` could not start, and what to do.
        Here only its last line; :class:`~corral.transports.ssh.SshTransport` reads ssh's."""
        lines = [line.strip() for line in said.splitlines() if line.strip()]
        return f"{self.name} ended at once " + (f"({lines[-1]!r})" if lines else "(and said nothing)")

    def _frame(self, op: str, args: Sequence[Any], kw: Mapping[str, Any]) -> tuple[int, bytes]:
        self._next_id += 1
        return self._next_id, encode({"id": self._next_id, "op": op, "args": list(args), "kw": dict(kw)})

    def _open(self, argv: Sequence[str]) -> _Session:
        """A new session that answered its hello; :class:`_NoStart` when it did not."""
        try:
            session = _Session(argv)
        except OSError as exc:
            raise _NoStart(f"cannot run {argv[0]}: {exc}") from exc
        ident, frame = self._frame("hello", [], {})
        try:
            answer = session.ask(ident, frame)
        except _Broken:
            raise _NoStart(session.end()) from None
        except BaseException:  # a Ctrl-C while ssh connects: leave no session behind
            session.end()
            raise
        if answer.get("ok") is not True:
            raise _NoStart(f"{session.end()}\nhello failed: {rebuild_error(answer.get('error'))}")
        return session

    def _end(self) -> str:
        """Forget the session (the next request starts another); what it said."""
        if self._session is not None:
            self._said = self._session.end()
            self._session = None
        return self._said

    def _ready(self) -> _Session:
        """The session to send over: the one kept, or a new one (see the module doc)."""
        if self._session is not None:
            if self._session.alive():
                return self._session
            self._end()  # it ended between requests: nothing was in flight
        if not self._connected:
            try:
                self._session = self._open(self.argv)
            except _NoStart as failed:
                self._said = failed.said
                raise AgentLost(
                    f"cannot start a session with {self.name}: {self.diagnose(failed.said)}", failed.said
                ) from None
            self._connected = True
        else:
            self._session = self._reconnect()
        return self._session

    def _reconnect(self) -> _Session:
        """A new session, started non-interactively, tried again with backoff for up to
        ``max_wait`` seconds."""
        started, attempt = self._clock(), 0
        told: set[str] = set()
        while True:
            try:
                session = self._open(self.reconnect_argv)
            except _NoStart as failed:
                self._said = failed.said
                advice = self.diagnose(failed.said, reconnecting=True)
                waited = self._clock() - started
                if self.max_wait is not None and waited >= self.max_wait:
                    raise AgentLost(
                        f"lost the session with {self.name}, and {attempt + 1} "
                        f"{'try' if attempt == 0 else 'tries'} in {waited:.0f} s did not start another: "
                        f"{advice}",
                        failed.said,
                    ) from None
                pause = self.backoff.pause(attempt, self._rng)
                if self.max_wait is not None:
                    pause = min(pause, self.max_wait - waited)
                if advice not in told:  # one warning per kind of trouble, not one per try
                    told.add(advice)
                    until = "as long as it takes" if self.max_wait is None else f"up to {self.max_wait:g} s"
                    log.warning(
                        "lost the session with %s and cannot start another: %s. corral tries again "
                        "with backoff (at most every %g s), for %s",
                        self.name, advice, self.backoff.cap, until,
                    )  # fmt: skip
                log.debug("%s: try %d failed; the next in %.1f s", self.name, attempt + 1, pause)
                self._sleep(pause)
                attempt += 1
            else:
                if attempt:
                    log.warning("%s: a new session started after %d tries", self.name, attempt + 1)
                return session

    def request(self, op: str, *args: Any, **kw: Any) -> Any:
        """One operation, answered: its value, or the exception the agent caught."""
        with self._lock:
            ident, frame = self._frame(op, args, kw)  # a value that cannot cross fails here
            breaks = 0
            while True:
                session = self._ready()
                try:
                    answer = session.ask(ident, frame)
                    break
                except _Broken as exc:
                    said = self._end()
                    breaks += 1
                    if not resends(op) or breaks > MAX_RESENDS:
                        raise AgentLost(
                            f"the session with {self.name} broke during {op} ({exc}): it may or may not "
                            "have been carried out",
                            said,
                            in_flight=True,
                        ) from None
                    log.warning(
                        "the session with %s broke during %s (%s): sending it again", self.name, op, exc
                    )
                except BaseException:  # a Ctrl-C mid-request: its answer would be taken for the next's
                    self._end()
                    raise
        if answer.get("ok") is True:
            return answer.get("value")
        raise rebuild_error(answer.get("error"))

    def close(self) -> None:
        """End the session: the agent sees its input end and exits."""
        with self._lock:
            self._end()

    # -- the Transport contract ----------------------------------------------------------------

    def hello(self) -> dict[str, Any]:
        """What the other side runs (see :func:`corral.transports.agent.hello`)."""
        value = self.request("hello")
        if not isinstance(value, dict):
            raise WireError(f"{self.name} answered hello with {type(value).__name__}")
        return value

    def expand_path(self, path: str) -> str:
        return str(self.request("expand_path", path))

    def run(self, argv: Sequence[str], *, timeout: float) -> CommandResult:
        value = self.request("run", list(argv), timeout=timeout)
        return CommandResult(tuple(value["argv"]), value["returncode"], value["stdout"], value["stderr"])

    def makedirs(self, path: str) -> None:
        self.request("makedirs", path)

    def makedirs_many(self, paths: Sequence[str]) -> None:
        self.request("makedirs_many", list(paths))

    def mkdir_exclusive(self, path: str) -> bool:
        return bool(self.request("mkdir_exclusive", path))

    def write_bytes(self, path: str, data: bytes, *, durable: bool = False) -> None:
        self.request("write_bytes", path, data, durable=durable)

    def write_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        self.request("write_many", [[path, data] for path, data in items])

    def create_exclusive(self, path: str, data: bytes) -> bool:
        return bool(self.request("create_exclusive", path, data))

    def read_bytes(self, path: str) -> bytes:
        return bytes(self.request("read_bytes", path))

    def read_private(self, path: str) -> bytes:
        return bytes(self.request("read_private", path))

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        return bytes(self.request("read_range", path, offset, length))

    def listdir(self, path: str) -> list[str]:
        return list(self.request("listdir", path))

    def scan(self, folder: str, cursors: Mapping[str, int], also: Sequence[str] = ()) -> dict[str, bytes]:
        if also:  # only then: an agent of a corral without echo still answers the usual scan
            return dict(self.request("scan", folder, dict(cursors), list(also)))
        return dict(self.request("scan", folder, dict(cursors)))

    def scan_many(self, scans: Sequence[Scan]) -> list[dict[str, bytes]]:
        answers = self.request(
            "scan_many", [[folder, dict(cursors), list(also)] for folder, cursors, also in scans]
        )
        return [dict(answer) for answer in answers]

    def remove_tree(self, path: str) -> None:
        self.request("remove_tree", path)

    def sweep_temporaries(self, folders: Sequence[str], max_age: float = 86400.0) -> int:
        return int(self.request("sweep_temporaries", list(folders), max_age))
