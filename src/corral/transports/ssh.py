"""The SSH transport: corral's agent (:mod:`.agent`) on a remote host, reached with the system's
OpenSSH client, so that ``~/.ssh/config``, ProxyJump, certificates, agents and known_hosts
work as the user set them up.

One master connection per host and user (``ControlMaster=auto``, sockets in a private 0700
folder, named by ``%C``, a hash short enough for the socket path limit) carries one long-lived
session, the agent's: every request of the client goes over it, so a host with
``MaxSessions 1`` works and a one-time code is asked once. Host keys are checked as the user's
configuration says; corral never turns the check off. Nothing it sends is read by a shell,
except the agent's command line, which is quoted word by word (``shlex.join``).

The first session of a process may ask for what the login needs (ssh's own askpass).
Sessions started after one broke (see :mod:`.pipe`) add ``BatchMode=yes`` (nothing is ever
asked: a login that needs a person fails, and a warning says what to run),
``StrictHostKeyChecking=yes`` (a key that is not in known_hosts by then is never added) and
``ConnectTimeout=30``; what ssh said is read by :mod:`.ssh_text`.
"""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from ..config_keys import ssh_destination
from ..errors import CorralError
from .pipe import AgentTransport
from .ssh_text import explain


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
        found = ssh_destination(text)
        if found is None:
            raise ValueError(f"{text!r} is not an ssh destination ([user@]host[:port], or a Host alias)")
        port = found["port"]
        if port is not None and not 0 < int(port) < 65536:
            raise ValueError(f"{text!r}: port {port} is out of range")
        return cls(found["host"], found["user"], int(port) if port else None)

    def __str__(self) -> str:
        text = f"{self.user}@{self.host}" if self.user else self.host
        return f"{text}:{self.port}" if self.port else text


#: The longest control folder path: a socket's path (folder, "/", 40 hex digits of %C, and
#: the ".XXXXXXXXXXXXXXXX" ssh adds while it creates one) must fit in sun_path (104-108 bytes).
_SOCKET_FOLDER_MAX = 104 - 1 - 40 - 17


def control_dir() -> str:
    """The private folder of corral's ssh control sockets (created 0700; refused when it is
    not the user's alone, since a socket planted there would carry every request):
    ``$XDG_RUNTIME_DIR/corral/ssh``, else ``~/.cache/corral/ssh``; when that path is too long
    for a socket's, ``/tmp/corral-ssh-<uid>``."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "corral", "ssh")
    if len(os.fsencode(path)) > _SOCKET_FOLDER_MAX:
        path = f"/tmp/corral-ssh-{os.geteuid()}"
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
    batch: bool = False,
) -> list[str]:
    """The ``ssh`` command that runs ``remote`` (an argv) on ``target`` over the shared master
    connection; ``config``: an ssh config file in place of the user's (``-F``); ``batch``: for
    a session started after one broke, one that never asks anything and never adds a host key
    (see the module doc)."""
    argv = ["ssh"] + (["-F", config] if config else [])
    argv += [
        "-T",  # no terminal: the session carries frames
        "-o", "ControlMaster=auto",
        "-o", f"ControlPath={os.path.join(sockets, '%C')}",
        "-o", f"ControlPersist={persist}",
        "-o", "ServerAliveInterval=15",
        "-o", "ServerAliveCountMax=4",
    ]  # fmt: skip
    if batch:  # on the command line, these win over any config file
        argv += ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=30"]
    if target.user:
        argv += ["-l", target.user]
    if target.port:
        argv += ["-p", str(target.port)]
    return [*argv, "--", target.host, remote_line(remote)]


def remote_line(argv: Sequence[str]) -> str:
    """``argv`` as the remote shell's command line: every word quoted, but a leading ``~/``
    of the program left to the remote shell, which makes it the remote user's home."""
    program, *rest = argv
    if not program.startswith("~/"):
        return shlex.join(argv)
    return " ".join(["~/" + shlex.quote(program[2:]), *map(shlex.quote, rest)])


class SshTransport(AgentTransport):
    """:class:`AgentTransport` whose agent runs on ``target`` with ``python`` (the remote
    interpreter that has corral); ``config``: an ssh config file in place of the user's;
    ``max_wait``: how long a request waits for a new session once one broke (None: as long
    as it takes; 0: one try; see :mod:`.pipe`)."""

    def __init__(
        self,
        target: str | SshTarget,
        python: str = "python3",
        *,
        config: str | None = None,
        max_wait: float | None = None,
    ) -> None:
        self.target = target if isinstance(target, SshTarget) else SshTarget.parse(target)
        self.python = python
        self.config = config
        self.sockets = control_dir()
        remote = [python, "-m", "corral.transports.agent"]
        super().__init__(
            ssh_argv(self.target, remote, sockets=self.sockets, config=config),
            name=str(self.target),
            reconnect_argv=ssh_argv(self.target, remote, sockets=self.sockets, config=config, batch=True),
            max_wait=max_wait,
        )

    def login_command(self) -> list[str]:
        """The ssh command a person runs in a terminal to log in as corral does: it asks
        what the login needs, and leaves the master connection corral's sessions share."""
        argv = ["ssh"] + (["-F", self.config] if self.config else [])
        argv += ["-o", "ControlMaster=auto", "-o", f"ControlPath={os.path.join(self.sockets, '%C')}"]
        argv += ["-o", "ControlPersist=10m"]
        if self.target.user:
            argv += ["-l", self.target.user]
        if self.target.port:
            argv += ["-p", str(self.target.port)]
        return [*argv, self.target.host, "true"]

    def diagnose(self, said: str, *, reconnecting: bool = False) -> str:
        """What ssh (or the remote shell, or python) said, for a person (see :mod:`.ssh_text`)."""
        login = self.login_command()
        host = str(self.target)
        return explain(said, host=host, python=self.python, login=login, reconnecting=reconnecting)

    def exit_master(self) -> None:
        """Close the master connection (``ssh -O exit``), as a sleeping laptop loses it."""
        import subprocess

        argv = self.argv[: self.argv.index("--")] + ["-O", "exit", self.target.host]
        subprocess.run(argv, capture_output=True, timeout=30)
