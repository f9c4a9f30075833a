"""The SSH transport: corral's agent (:mod:`.agent`) on a remote host, reached with the system's
OpenSSH client, so that ``~/.ssh/config``, ProxyJump, certificates, agents and known_hosts
work as the user set them up.

One master connection per host and user (``ControlMaster=auto``, sockets in a private 0700
folder, named by ``%C``, a hash short enough for the socket path limit) carries one long-lived
session, the agent's: every request of the client goes over it, so a host with
``MaxSessions 1`` works and a one-time code is asked once. Host keys are checked as the user's
configuration says; corral never turns the check off. Nothing it sends is read by a shell,
except the agent's command line, which is quoted word by word (``shlex.join``).
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import CorralError
from .pipe import AgentTransport

_TARGET = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?$"
)


@dataclass(frozen=True)
class SshTarget:
    """Where to connect: a Host alias of ``~/.ssh/config``, or ``[user@]host[:port]``."""

    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> SshTarget:
        """``alias``, ``host``, ``user@host``, ``user@host:port``; a ValueError names what
        is wrong (an option-like ``-oProxyCommand=...`` is not a host)."""
        found = _TARGET.match(text)
        if found is None or text.startswith("-"):
            raise ValueError(f"{text!r} is not an ssh destination ([user@]host[:port], or a Host alias)")
        port = found["port"]
        if port is not None and not 0 < int(port) < 65536:
            raise ValueError(f"{text!r}: port {port} is out of range")
        return cls(found["host"], found["user"], int(port) if port else None)

    def __str__(self) -> str:
        text = f"{self.user}@{self.host}" if self.user else self.host
        return f"{text}:{self.port}" if self.port else text


def control_dir() -> str:
    """The private folder of corral's ssh control sockets (created 0700; refused when it is
    not the user's alone, since a socket planted there would carry every request)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "corral", "ssh")
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise CorralError(f"{path}: the ssh control folder must be a folder of yours that only you can use")
    return path


def ssh_argv(
    target: SshTarget,
    remote: Sequence[str],
    *,
    sockets: str,
    config: str | None = None,
    persist: str = "10m",
) -> list[str]:
    """The ``ssh`` command that runs ``remote`` (an argv) on ``target`` over the shared master
    connection; ``config``: an ssh config file in place of the user's (``-F``)."""
    argv = ["ssh"] + (["-F", config] if config else [])
    argv += [
        "-T",  # no terminal: the session carries frames
        "-o", "ControlMaster=auto",
        "-o", f"ControlPath={os.path.join(sockets, '%C')}",
        "-o", f"ControlPersist={persist}",
        "-o", "ServerAliveInterval=15",
        "-o", "ServerAliveCountMax=4",
    ]  # fmt: skip
    if target.user:
        argv += ["-l", target.user]
    if target.port:
        argv += ["-p", str(target.port)]
    return [*argv, "--", target.host, shlex.join(remote)]


class SshTransport(AgentTransport):
    """:class:`AgentTransport` whose agent runs on ``target`` with ``python`` (the remote
    interpreter that has corral)."""

    def __init__(
        self, target: str | SshTarget, python: str = "python3", *, config: str | None = None
    ) -> None:
        self.target = target if isinstance(target, SshTarget) else SshTarget.parse(target)
        remote = [python, "-m", "corral.transports.agent"]
        super().__init__(
            ssh_argv(self.target, remote, sockets=control_dir(), config=config), name=str(self.target)
        )
        self.config = config

    def exit_master(self) -> None:
        """Close the master connection (``ssh -O exit``), as a sleeping laptop loses it."""
        import subprocess

        argv = self.argv[: self.argv.index("--")] + ["-O", "exit", self.target.host]
        subprocess.run(argv, capture_output=True, timeout=30)
