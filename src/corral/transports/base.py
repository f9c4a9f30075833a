"""The Transport contract: run an argv on one host and read or write files there.

A transport knows nothing of schedulers. Commands are argv lists, never shell strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class CommandResult:
    """What one command printed and how it exited."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandTimeout(TimeoutError):
    """A command did not finish within its timeout (it was killed)."""


#: One folder's scan: the folder, the cursors, the other endings to read (see Transport.scan).
Scan = tuple[str, Mapping[str, int], Sequence[str]]


class Transport(Protocol):
    """Runs commands and touches files on one host."""

    def run(self, argv: Sequence[str], *, timeout: float) -> CommandResult:
        """Run ``argv``; raise :class:`CommandTimeout` past ``timeout`` seconds and
        ``FileNotFoundError`` when the program does not exist."""
        ...

    def expand_path(self, path: str) -> str:
        """``path`` with ``~`` and ``$VARS`` expanded and made absolute *on this transport's
        host* (its user's home, its environment): ``os.path.abspath(os.path.expandvars(
        os.path.expanduser(path)))`` run there. Touches nothing."""
        ...

    def makedirs(self, path: str) -> None:
        """Create ``path`` and its parents, each new folder private (0700); ``path`` itself,
        new or not, must then pass :func:`corral.trust.check_private_dir`. A folder that cannot
        be created raises :class:`~corral.errors.WorkDirError`."""
        ...

    def makedirs_many(self, paths: Sequence[str]) -> None:
        """:meth:`makedirs` of each path, in ONE operation (a new batch's folders)."""
        ...

    def mkdir_exclusive(self, path: str) -> bool:
        """Create the one folder ``path`` (0700); False when the name is taken already. Over a
        remote transport whose session breaks with it in flight, ``ConnectionError``
        (:class:`~corral.transports.pipe.AgentLost`): it is not sent again, since the second
        try would say False for the folder the first one made."""
        ...

    def write_bytes(self, path: str, data: bytes, *, durable: bool = False) -> None:
        """Write a file atomically (temporary file, then rename), private to the user;
        ``durable``: synced to disk before it takes its name."""
        ...

    def write_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Write several files atomically each; a remote transport does it in one round trip."""
        ...

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create ``path`` holding ``data`` only if it does not exist; False if it did. The
        file appears whole (written under another name, then linked), so a reader never sees
        it empty or partial, on NFS too. Over a remote transport whose session breaks with it
        in flight, ``ConnectionError`` (:class:`~corral.transports.pipe.AgentLost`): the file
        may exist, made by this very call, and a second try would say False for it. The caller
        finds out by reading it back (a claim names who took it); a mark without content,
        which anyone may have made, reads the same either way."""
        ...

    def read_bytes(self, path: str) -> bytes:
        """Read a whole file, never through a symbolic link; ``FileNotFoundError`` when it
        does not exist."""
        ...

    def read_private(self, path: str) -> bytes:
        """Read a whole file that will be unpickled: as :meth:`read_bytes`, and refused
        unless :func:`corral.trust.check_private_file` passes on the open file."""
        ...

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        """Read ``length`` bytes of a file from ``offset``; checked as :meth:`read_private`."""
        ...

    def listdir(self, path: str) -> list[str]:
        """Names in a folder; an empty list when the folder does not exist."""
        ...

    def scan(self, folder: str, cursors: Mapping[str, int], also: Sequence[str] = ()) -> dict[str, bytes]:
        """ONE operation (one round trip for a remote transport) that lists ``folder`` and
        returns, for every regular file in it whose name ends in ``.log`` (or in one of
        ``also``, read before the ``.log`` files), the bytes from ``cursors.get(name, 0)`` to
        its current end: only files that grew are in the answer,
        and a file now shorter than its cursor maps to ``b""`` (the caller re-reads it from
        where its records are whole). Each file is opened without following a symbolic link
        and checked as :meth:`read_private` checks (payloads in streams are unpickled):
        :class:`~corral.errors.UnsafeWorkDirError` for one someone else could write. A
        missing folder: ``{}``."""
        ...

    def scan_many(self, scans: Sequence[Scan]) -> list[dict[str, bytes]]:
        """ONE operation for several folders: :meth:`scan` of each ``(folder, cursors,
        also)``, the answers in the same order (the engine's tick over every live batch). An
        :class:`~corral.errors.UnsafeWorkDirError` of any folder is raised for all of them:
        the caller scans each alone to find whose it is."""
        ...

    def remove_tree(self, path: str) -> None:
        """Remove the folder ``path`` and everything in it; it must pass
        :func:`corral.trust.check_private_dir` (so never someone else's, and never through a
        symbolic link), and nothing below it is followed. A missing folder is not an error."""
        ...

    def sweep_temporaries(self, folders: Sequence[str], max_age: float = 86400.0) -> int:
        """Remove the temporary files in ``folders`` that writers killed mid-write left (their
        process is gone, or they are older than ``max_age`` seconds); return how many. One
        operation for all the folders."""
        ...
