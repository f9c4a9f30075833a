"""Transport for the machine corral runs on."""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
from collections.abc import Sequence

from .base import CommandResult, CommandTimeout

_tmp_ids = itertools.count()


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

    def makedirs(self, path: str) -> None:
        # os.makedirs applies its mode to the last folder only: create each one ourselves.
        missing = []
        head = os.path.abspath(path)
        while not os.path.isdir(head):
            missing.append(head)
            head = os.path.dirname(head)
        for folder in reversed(missing):
            try:
                os.mkdir(folder, 0o700)
            except FileExistsError:
                pass

    def write_bytes(self, path: str, data: bytes) -> None:
        folder, name = os.path.split(path)
        # A dot-name unique to this process and thread: readers skip it, no writer shares it.
        tmp = os.path.join(folder, f".{name}.{os.getpid()}-{threading.get_ident()}-{next(_tmp_ids)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def write_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        for path, data in items:
            self.write_bytes(path, data)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return True

    def read_bytes(self, path: str) -> bytes:
        with open(path, "rb") as handle:
            return handle.read()

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        with open(path, "rb") as handle:
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
