"""Transport for the machine corral runs on.

Files are read without following a symbolic link in their last component, and a file that
will be unpickled is checked on its open descriptor (see :mod:`corral.trust`). Writes go to
a temporary dot-name first (``.<name>~<host>~<pid>-<thread>-<n>.tmp``) and are renamed into
place; :meth:`LocalTransport.sweep_temporaries` removes those a killed writer left behind.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence

from ..trust import check_private_dir, check_private_file, refusal
from .base import CommandResult, CommandTimeout, Scan

_tmp_ids = itertools.count()
_HOST = os.uname().nodename  # in temporary names: whose pid the name holds


def _choose_another(path: str, exc: OSError) -> Exception:
    from ..errors import WorkDirError  # only on failure: the worker starts without it

    reason = exc.strerror or str(exc)
    return WorkDirError(
        f"cannot create {path} ({reason}): corral keeps its work dir there. Choose a folder you "
        "can write with directory= (Executor, Pool, task) or the CORRAL_DIR environment variable",
        path=path,
    )


class LocalTransport:
    """Runs commands with :mod:`subprocess` (no shell) and touches local files."""

    def run(self, argv: Sequence[str], *, timeout: float) -> CommandResult:
        try:
            proc = subprocess.run(
                list(argv),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise CommandTimeout(f"{argv[0]} did not answer within {timeout:g} s") from exc
        return CommandResult(tuple(argv), proc.returncode, proc.stdout, proc.stderr)

    def expand_path(self, path: str) -> str:
        return os.path.abspath(os.path.expandvars(os.path.expanduser(path)))

    def makedirs(self, path: str) -> None:
        # os.makedirs applies its mode to the last folder only: create each one ourselves.
        missing = []
        head = os.path.abspath(path)
        while not os.path.lexists(head):
            missing.append(head)
            head = os.path.dirname(head)
        for folder in reversed(missing):
            try:
                os.mkdir(folder, 0o700)
            except FileExistsError:
                pass
            except OSError as exc:  # a read-only or foreign parent: say how to choose another
                raise _choose_another(folder, exc) from exc
        # Whoever made it (we, a moment ago, or someone else before), it must be ours alone.
        check_private_dir(path)

    def makedirs_many(self, paths: Sequence[str]) -> None:
        for path in paths:
            self.makedirs(path)

    def mkdir_exclusive(self, path: str) -> bool:
        """Create the folder ``path`` (0700); False when something already has that name."""
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            return False
        except OSError as exc:
            raise _choose_another(path, exc) from exc
        return True

    def write_bytes(self, path: str, data: bytes, *, durable: bool = False) -> None:
        tmp = self._write_temporary(path, data, durable)
        try:
            os.replace(tmp, path)  # replaces a symbolic link at ``path``, never follows it
        except BaseException:
            _unlink_quietly(tmp)
            raise

    def _write_temporary(self, path: str, data: bytes, durable: bool = False) -> str:
        """Write ``data`` to a new temporary file beside ``path`` and return its name."""
        folder, name = os.path.split(path)
        # A dot-name unique to this host, process and thread: readers skip it, no writer
        # shares it, and sweep_temporaries can tell whether its writer still lives.
        tmp = os.path.join(
            folder, f".{name}~{_HOST}~{os.getpid()}-{threading.get_ident()}-{next(_tmp_ids)}.tmp"
        )
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return tmp

    def write_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        for path, data in items:
            self.write_bytes(path, data)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create ``path`` holding ``data`` whole, only if the name is free: the data goes to a
        temporary file first, which is then hard-linked to ``path``. ``link`` fails when the
        name exists (a symbolic link too, never followed) and is atomic on NFS as well, so no
        reader ever sees the file empty or half written."""
        tmp = self._write_temporary(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            # An NFS client may retry a link whose reply was lost and then hear "exists" for
            # its own link: the temporary file then has two names.
            return os.lstat(tmp).st_nlink == 2 and os.path.samefile(tmp, path)
        finally:
            _unlink_quietly(tmp)
        return True

    def read_bytes(self, path: str) -> bytes:
        with os.fdopen(_open_no_link(path), "rb") as handle:
            return handle.read()

    def read_private(self, path: str) -> bytes:
        """Read a file that will be unpickled: refused unless the user owns it and nobody
        else can write it (:class:`~corral.errors.UnsafeWorkDirError`)."""
        fd = _open_no_link(path)
        try:
            size = check_private_file(fd, path)
            # os.read, not a file object: it would fstat the file a second time. Read on
            # past ``size`` until the end, in case the file grew since.
            chunks = [os.read(fd, size + 1)]
            while chunks[-1]:
                chunks.append(os.read(fd, 1 << 20))
            return b"".join(chunks)
        finally:
            os.close(fd)

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        fd = _open_no_link(path)
        with os.fdopen(fd, "rb") as handle:
            check_private_file(fd, path)  # the packed calls are unpickled
            handle.seek(offset)
            data = handle.read(length)
        if len(data) != length:
            raise OSError(f"{path} is shorter than its index says ({offset}+{length})")
        return data

    def listdir(self, path: str) -> list[str]:
        try:
            return os.listdir(path)
        except FileNotFoundError:
            return []

    def remove_tree(self, path: str) -> None:
        try:
            check_private_dir(path)
        except FileNotFoundError:
            return
        # rmtree walks by file descriptor here (Linux): a link planted below is removed, not followed.
        shutil.rmtree(path, onerror=_gone_is_fine)

    def scan_many(self, scans: Sequence[Scan]) -> list[dict[str, bytes]]:
        """:meth:`scan` of each folder, in order (see :meth:`corral.transports.base.Transport.scan_many`)."""
        return [self.scan(folder, cursors, also) for folder, cursors, also in scans]

    def scan(self, folder: str, cursors: Mapping[str, int], also: Sequence[str] = ()) -> dict[str, bytes]:
        """What grew in the ``.log`` files of ``folder``, and in those ending in one of
        ``also``, since ``cursors`` (see :meth:`corral.transports.base.Transport.scan`)."""
        ends = tuple(also)
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return {}
        grown: dict[str, bytes] = {}
        # The files of ``also`` first, then the streams: a byte read from an output file was
        # printed by a call whose record the stream read next holds (see engine.echo).
        names.sort(key=lambda name: name.endswith(".log"))
        for name in names:
            if name.startswith(".") or not (name.endswith(".log") or (ends and name.endswith(ends))):
                continue
            path = os.path.join(folder, name)
            try:  # O_NONBLOCK: a FIFO planted under a .log name must not hang the poll loop
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                raise refusal(  # a link where a stream should be: someone else put it there
                    f"refusing to read {path}: it is a symbolic link, and corral follows none inside "
                    "a work dir",
                    path=path,
                ) from None
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                size = check_private_file(fd, path)  # the client unpickles payloads in streams
                start = cursors.get(name, 0)
                if size < start:
                    grown[name] = b""  # cut below the cursor: the caller rewinds
                elif size > start:
                    grown[name] = _read_from(fd, start, size)
            finally:
                os.close(fd)
        return grown

    def sweep_temporaries(self, folders: Sequence[str], max_age: float = 86400.0) -> int:
        """Remove the temporary files in ``folders`` whose writer is gone: one of this host
        whose process no longer exists, or any older than ``max_age`` seconds (a writer on
        another host, whose process cannot be asked). Return how many were removed.
        Housekeeping: a folder or file it cannot read or remove is left as it is."""
        return sum(_sweep(folder, max_age) for folder in folders)


def _sweep(folder: str, max_age: float) -> int:
    """:meth:`LocalTransport.sweep_temporaries` in one folder."""
    removed = 0
    now = time.time()
    try:
        entries = os.listdir(folder)
    except OSError:
        return 0
    for entry in entries:
        if not (entry.startswith(".") and entry.endswith(".tmp")):
            continue
        path = os.path.join(folder, entry)
        try:
            old = now - os.lstat(path).st_mtime > max_age
            if old or _writer_is_dead(entry):
                os.unlink(path)
                removed += 1
        except OSError:
            pass  # renamed into place or removed meanwhile, or not ours to remove
    return removed


def _gone_is_fine(_: object, path: str, info: tuple[type[BaseException], BaseException, object]) -> None:
    """rmtree's error handler: what vanished meanwhile is fine, anything else is raised."""
    if not isinstance(info[1], FileNotFoundError):
        raise info[1]


def _open_no_link(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise refusal(
            f"refusing to read {path}: it is a symbolic link, and corral follows none inside a work dir",
            path=path,
        ) from None


def _read_from(fd: int, start: int, size: int) -> bytes:
    """The bytes of ``fd`` from ``start`` to the end (at least to ``size``, if it grew since)."""
    chunks = []
    offset = start
    while chunk := os.pread(fd, max(size - offset, 1 << 16), offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _writer_is_dead(entry: str) -> bool:
    """True when the temporary file ``entry`` was written on this host by a process that
    no longer exists (names of other hosts, or of older corrals, say nothing)."""
    parts = entry[1 : -len(".tmp")].rsplit("~", 2)
    if len(parts) != 3 or parts[1] != _HOST:
        return False
    pid = parts[2].partition("-")[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # a process of someone else's has that pid: it may be the writer's, keep it
    return False
