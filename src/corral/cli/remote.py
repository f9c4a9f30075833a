"""``corral COMMAND --host NAME``: the same command, run by corral on the host.

The work dir lives on the host, so the host's corral reads it, with its own checks, as the
remote user; its output comes back over the process's SSH session (one authentication, see
:mod:`corral.frontends.hosts`) and passes through :func:`~corral.cli.display.printable` here
too, since a terminal must never obey what a work dir holds. The exit code is the host's.
The host's output comes back when the command has ended (``attach`` prints its lines then,
not as it goes).
"""

from __future__ import annotations

import sys

from ..config import resolve
from ..errors import CorralError
from ..frontends.hosts import connect
from .display import printable

#: Seconds the host's command may take.
TIMEOUT = 300.0
#: The commands of the ``corral`` command (the first of them in argv is the command).
COMMANDS = ("status", "logs", "sweep", "cancel", "clean", "attach", "doctor")
#: ``attach`` waits for a batch to end, and ``doctor`` for its test job: a day at most.
WAITING = {"attach": 86400.0, "doctor": 3600.0}


def run_on_host(host: str | None, argv: list[str], directory: str | None) -> int | None:
    """Run the ``corral`` command ``argv`` (without ``--host``) on ``host`` (default:
    ``$CORRAL_HOST``) in its work dir, or in ``directory`` there; print what it printed and
    return its exit code. None when ``$CORRAL_HOST`` names a host of this machine (one
    without ``ssh``): the command runs here."""
    settings = resolve(host=host)
    if settings.ssh is None:
        if host is None:
            return None
        raise CorralError(f"host {settings.host!r} has no ssh destination: run the command without --host")
    remote = connect(settings)
    words = _without_host(argv)
    command = next((word for word in words if word in COMMANDS), None)
    if command is None:
        words = ["status", *words]  # `corral` alone is `corral status`
    if directory is None:
        words += ["--dir", remote.found.directory]
    timeout = WAITING.get(command or "", TIMEOUT)
    result = remote.transport.run([remote.found.python, "-m", "corral", *words], timeout=timeout)
    sys.stdout.write(printable(result.stdout))
    sys.stderr.write(printable(result.stderr))
    return result.returncode


def _without_host(argv: list[str]) -> list[str]:
    """``argv`` less its ``--host NAME`` or ``--host=NAME``."""
    words: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--host":
            skip = True
        elif not word.startswith("--host="):
            words.append(word)
    return words
