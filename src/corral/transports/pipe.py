"""A transport whose every operation is one request to an agent (:mod:`.agent`) at the other
end of a pipe: a local subprocess in tests, ``ssh HOST python -m corral.transports.agent``
for a remote host (:mod:`.ssh`). One request at a time, answered in order; the session is
started at the first request and kept.

What the agent writes to its standard error (and what ``ssh`` says there: a refused host
key, a failed login) is kept, its last lines quoted in the :class:`AgentLost` raised when
the session ends."""

from __future__ import annotations

import collections
import subprocess
import threading
from collections.abc import Mapping, Sequence
from typing import IO, Any

from ..errors import CorralError
from .base import CommandResult
from .wire import WireError, encode, read_message, rebuild_error


class AgentLost(CorralError):
    """The session with the agent ended or broke (the connection dropped, the agent or ssh
    exited); ``stderr`` is what they said last. A request in flight may or may not have
    been carried out."""

    transient = True

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message + (f"\n{stderr}" if stderr else ""))
        self.stderr = stderr


class AgentTransport:
    """:class:`~corral.transports.base.Transport` through an agent started by ``argv``."""

    def __init__(self, argv: Sequence[str], *, name: str = "agent") -> None:
        self.argv = list(argv)
        self.name = name
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._next_id = 0
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)

    # -- the session ---------------------------------------------------------------------------

    def _start(self) -> subprocess.Popen[bytes]:
        try:
            proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C at the terminal is the client's, not the session's
            )  # fmt: skip
        except OSError as exc:
            raise AgentLost(f"cannot start {self.name} ({self.argv[0]}): {exc}") from exc
        assert proc.stderr is not None
        threading.Thread(target=self._keep_stderr, args=(proc.stderr,), daemon=True).start()
        return proc

    def _keep_stderr(self, stream: IO[bytes]) -> None:
        for line in stream:
            self._stderr.append(line.decode(errors="replace").rstrip("\n"))

    def said(self) -> str:
        """The last lines the agent (or ssh) wrote to its standard error."""
        return "\n".join(self._stderr)

    def request(self, op: str, *args: Any, **kw: Any) -> Any:
        """One operation, answered: its value, or the exception the agent caught."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            proc = self._proc
            assert proc.stdin is not None and proc.stdout is not None
            self._next_id += 1
            ident = self._next_id
            try:
                proc.stdin.write(encode({"id": ident, "op": op, "args": list(args), "kw": kw}))
                proc.stdin.flush()
                answer = read_message(proc.stdout)
            except (OSError, WireError) as exc:
                self._drop(proc)
                raise AgentLost(
                    f"the session with {self.name} broke during {op}: {exc}", self.said()
                ) from exc
            if answer is None:
                self._drop(proc)
                raise AgentLost(f"the session with {self.name} ended during {op}", self.said())
            if answer.get("id") != ident:
                self._drop(proc)
                raise AgentLost(f"{self.name} answered request {answer.get('id')}, not {ident}")
        if answer.get("ok") is True:
            return answer.get("value")
        raise rebuild_error(answer.get("error"))

    def _drop(self, proc: subprocess.Popen[bytes]) -> None:
        """Forget a broken session (the next request starts another)."""
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._proc = None

    def close(self) -> None:
        """End the session: the agent sees its input end and exits."""
        with self._lock:
            if self._proc is not None:
                self._drop(self._proc)

    # -- the Transport contract ----------------------------------------------------------------

    def hello(self) -> dict[str, Any]:
        """What the other side runs (see :func:`corral.transports.agent.hello`)."""
        value = self.request("hello")
        if not isinstance(value, dict):
            raise WireError(f"{self.name} answered hello with {type(value).__name__}")
        return value

    def run(self, argv: Sequence[str], *, timeout: float) -> CommandResult:
        value = self.request("run", list(argv), timeout=timeout)
        return CommandResult(tuple(value["argv"]), value["returncode"], value["stdout"], value["stderr"])

    def makedirs(self, path: str) -> None:
        self.request("makedirs", path)

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

    def scan(self, folder: str, cursors: Mapping[str, int]) -> dict[str, bytes]:
        return dict(self.request("scan", folder, dict(cursors)))

    def sweep_temporaries(self, folders: Sequence[str], max_age: float = 86400.0) -> int:
        return int(self.request("sweep_temporaries", list(folders), max_age))
