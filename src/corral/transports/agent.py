"""``python -m corral.transports.agent``: corral's end on a remote host.

It answers requests on its standard input with :class:`~corral.transports.local.LocalTransport`
doing the work, one at a time, in order, until its input ends (see :mod:`.wire` for the
frames). One agent serves a client's whole session over one SSH session: a host with
``MaxSessions 1`` or a one-time code per login is asked once.

Only the operations of the :class:`~corral.transports.base.Transport` contract are answered
(:data:`OPS`), plus ``hello``, which says what this side runs (Python, corral and cloudpickle
versions, the user, the host; see :func:`hello`) for the client's preflight
(:mod:`.preflight`). Its standard output carries frames
only: whatever else would print there goes to standard error.
"""

from __future__ import annotations

import getpass
import os
import pwd
import socket
import sys
from typing import IO, Any

from .local import LocalTransport
from .wire import encode, error_fields, read_message

#: The operations an agent answers: the Transport contract's, by name.
OPS = frozenset(
    {
        "run", "expand_path", "makedirs", "makedirs_many", "mkdir_exclusive", "write_bytes", "write_many",
        "create_exclusive", "read_bytes", "read_private", "read_range", "listdir", "scan", "scan_many",
        "sweep_temporaries", "remove_tree",
    }
)  # fmt: skip


def corral_version() -> str:
    """The version of the corral installed here ("" when it was never installed)."""
    from importlib import metadata  # not ``import corral``: that is the layers above this one

    try:
        return metadata.version("corral")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return ""


def hello() -> dict[str, Any]:
    """What this side runs, for the client's preflight: ``python`` (version_info[:3]),
    ``implementation`` (``cpython``), ``executable``, ``prefix`` (its venv), ``corral`` and
    ``cloudpickle`` (their versions, "" when missing), ``user``, ``uid``, ``host``, ``home``,
    ``pid``, and the ``ops`` this agent answers."""
    try:
        import cloudpickle

        pickler = str(cloudpickle.__version__)
    except ImportError:
        pickler = ""
    return {
        "python": list(sys.version_info[:3]),
        "implementation": sys.implementation.name,
        "executable": sys.executable,
        "prefix": sys.prefix,
        "corral": corral_version(),
        "cloudpickle": pickler,
        "user": _user(),
        "uid": os.getuid(),
        "host": socket.gethostname(),
        "home": os.path.expanduser("~"),
        "pid": os.getpid(),
        "ops": sorted(OPS),
    }


def _user() -> str:
    """The name of the user this process runs as (its uid's, as the scheduler sees it)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid with no name (a container): what the environment says
        return getpass.getuser()


def answer(transport: LocalTransport, request: dict[str, Any]) -> dict[str, Any]:
    """The answer to one request (an error answer for anything it raises)."""
    ident, op = request["id"], request.get("op")
    args, kw = request.get("args", []), request.get("kw", {})
    try:
        if not isinstance(args, list) or not isinstance(kw, dict):
            raise ValueError("a request's args must be a list and its kw a dict")
        if op == "hello":
            value: Any = hello()
        elif isinstance(op, str) and op in OPS:
            value = getattr(transport, op)(*args, **kw)
        else:
            raise ValueError(f"the agent answers no operation {op!r}")
    except Exception as exc:  # noqa: BLE001 - every failure is the answer, the agent carries on
        return {"id": ident, "ok": False, "error": error_fields(exc)}
    if op == "run":  # a CommandResult, as its fields
        value = {
            "argv": list(value.argv),
            "returncode": value.returncode,
            "stdout": value.stdout,
            "stderr": value.stderr,
        }
    return {"id": ident, "ok": True, "value": value}


def serve(source: IO[bytes], sink: IO[bytes]) -> int:
    """Answer every request on ``source`` to ``sink``; 0 at the end of the input, 2 when the
    input is not this protocol."""
    from .wire import WireError

    transport = LocalTransport()
    while True:
        try:
            request = read_message(source)
        except WireError as exc:
            sys.stderr.write(f"corral agent: {exc}\n")
            return 2
        if request is None:
            return 0
        sink.write(encode(answer(transport, request)))
        sink.flush()


def main() -> int:
    os.umask(0o077)
    channel_in, channel_out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # only frames on the channel: a stray print goes to stderr
    return serve(channel_in, channel_out)


if __name__ == "__main__":
    sys.exit(main())
