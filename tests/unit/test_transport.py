"""The file operations the streams rely on (whole exclusive creates, and scan(): one operation
per poll tick, whatever the number of streams), on LocalTransport and on an AgentTransport
whose agent (the one a remote host runs) is a local subprocess."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from corral.errors import UnsafeWorkDirError
from corral.store.batch import BatchStore
from corral.transports import LocalTransport
from corral.transports.pipe import AgentTransport

AGENT = [sys.executable, "-m", "corral.transports.agent"]
AnyTransport = LocalTransport | AgentTransport


@pytest.fixture(params=["local", "agent"])
def transport(request: pytest.FixtureRequest) -> Iterator[AnyTransport]:
    if request.param == "local":
        yield LocalTransport()
        return
    agent = AgentTransport(AGENT)
    yield agent
    agent.close()


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "streams"
    path.mkdir(mode=0o700)
    umask = os.umask(0o077)  # what the worker sets: new files private
    yield path
    os.umask(umask)


def test_create_exclusive_makes_the_file_whole_once(
    folder: Path, transport: LocalTransport | AgentTransport
) -> None:
    assert transport.create_exclusive(str(folder / "0.0"), b"J_0 h 1 5")
    assert not transport.create_exclusive(str(folder / "0.0"), b"J_1 h 2 7")
    assert (folder / "0.0").read_bytes() == b"J_0 h 1 5"
    assert os.listdir(folder) == ["0.0"]  # the temporary name is gone
    assert (folder / "0.0").stat().st_nlink == 1 and (folder / "0.0").stat().st_mode & 0o077 == 0


def test_create_exclusive_counts_a_planted_link_as_taken_and_follows_none(
    folder: Path, transport: LocalTransport | AgentTransport
) -> None:
    target = folder / "elsewhere"
    (folder / "0.0").symlink_to(target)
    assert not transport.create_exclusive(str(folder / "0.0"), b"data")
    assert not target.exists()


def test_write_bytes_durable_writes_the_file(
    folder: Path, transport: LocalTransport | AgentTransport
) -> None:
    transport.write_bytes(str(folder / "1.0.pkl"), b"outcome", durable=True)
    assert (folder / "1.0.pkl").read_bytes() == b"outcome" and os.listdir(folder) == ["1.0.pkl"]


def test_scan_returns_what_each_log_appended_since_its_cursor(
    folder: Path, transport: LocalTransport | AgentTransport
) -> None:
    (folder / "J_0.log").write_bytes(b"abcdef")
    (folder / "J_1.log").write_bytes(b"xyz")
    (folder / "J_2.log").write_bytes(b"")
    (folder / "J_0.out").write_bytes(b"not a stream")
    (folder / ".J_3.log~h~1-2-3.tmp").write_bytes(b"a temporary file")
    assert transport.scan(str(folder), {}) == {"J_0.log": b"abcdef", "J_1.log": b"xyz"}
    cursors = {"J_0.log": 4, "J_1.log": 3}
    assert transport.scan(str(folder), cursors) == {"J_0.log": b"ef"}  # only what grew
    with open(folder / "J_1.log", "ab") as log:
        log.write(b"!")
    assert transport.scan(str(folder), cursors) == {"J_0.log": b"ef", "J_1.log": b"!"}
    os.truncate(folder / "J_0.log", 2)  # cut below its cursor: b"", the caller re-reads
    assert transport.scan(str(folder), cursors)["J_0.log"] == b""
    assert transport.scan(str(folder / "missing"), {}) == {}


def test_makedirs_many_makes_each_folder_private_in_one_operation(
    folder: Path, transport: LocalTransport | AgentTransport
) -> None:
    made = [folder / "batch" / sub for sub in ("subs", "streams", "results")]
    transport.makedirs_many([str(path) for path in made])
    assert all(stat.S_IMODE(os.stat(path).st_mode) == 0o700 for path in [folder / "batch", *made])
    transport.makedirs_many([str(path) for path in made])  # again: what is there is checked, and kept
    os.chmod(made[1], 0o777)  # one that someone else could write to
    with pytest.raises(UnsafeWorkDirError):
        transport.makedirs_many([str(path) for path in made])


def test_a_new_batch_folder_is_three_operations(tmp_path: Path) -> None:
    """The root, the batch folder (exclusively: a name taken is never reused), its folders."""

    asked: list[str] = []

    class Recording(LocalTransport):
        def makedirs(self, path: str) -> None:
            asked.append("makedirs")
            super().makedirs(path)

        def mkdir_exclusive(self, path: str) -> bool:
            asked.append("mkdir_exclusive")
            return super().mkdir_exclusive(path)

        def makedirs_many(self, paths: Sequence[str]) -> None:
            asked.append("makedirs_many")
            LocalTransport().makedirs_many(paths)  # one operation, whatever it does inside

    store = BatchStore.create(str(tmp_path / "work"), "t", Recording())
    assert asked == ["makedirs", "mkdir_exclusive", "makedirs_many"]
    assert {p.name for p in Path(store.path).iterdir()} >= {"subs", "streams", "attempts"}


def test_scan_many_answers_as_a_scan_of_each_folder_in_order(
    folder: Path, transport: LocalTransport | AgentTransport
) -> None:
    """The engine's tick over several batches: one operation, the same answers."""
    a, b = folder / "a", folder / "b"
    for where in (a, b):
        where.mkdir()
        (where / "J_0.log").write_bytes(b"stream of " + where.name.encode())
        (where / "J_0.out").write_bytes(b"printed")
    scans = [(str(a), {}, ()), (str(b), {"J_0.log": 10}, (".out",)), (str(folder / "missing"), {}, ())]
    assert transport.scan_many(scans) == [transport.scan(f, c, e) for f, c, e in scans]
    assert transport.scan_many(scans) == [
        {"J_0.log": b"stream of a"},
        {"J_0.out": b"printed", "J_0.log": b"b"},
        {},
    ]
    assert transport.scan_many([]) == []
    os.chmod(b / "J_0.log", 0o622)  # one folder someone else could write to: refused for all
    with pytest.raises(UnsafeWorkDirError):
        transport.scan_many(scans)


def test_scan_skips_fifos_and_folders_and_refuses_links_and_a_foreign_writable_log(
    folder: Path, transport: LocalTransport | AgentTransport
) -> None:
    os.mkfifo(folder / "F_0.log", 0o600)  # would block an open without O_NONBLOCK
    (folder / "D_0.log").mkdir()
    assert transport.scan(str(folder), {}) == {}
    (folder / "real").write_bytes(b"secret")
    (folder / "L_0.log").symlink_to(folder / "real")  # someone else put a link there
    with pytest.raises(UnsafeWorkDirError, match="symbolic link"):
        transport.scan(str(folder), {})
    os.unlink(folder / "L_0.log")
    (folder / "J_0.log").write_bytes(b"payload")
    os.chmod(folder / "J_0.log", 0o622)
    with pytest.raises(UnsafeWorkDirError):
        transport.scan(str(folder), {})


class Counting(LocalTransport):
    """Counts the transport operations the store makes."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def scan(self, folder: str, cursors: Mapping[str, int]) -> dict[str, bytes]:
        self.calls.append("scan")
        return super().scan(folder, cursors)

    def read_bytes(self, path: str) -> bytes:
        self.calls.append("read_bytes")
        return super().read_bytes(path)

    def listdir(self, path: str) -> list[str]:
        self.calls.append("listdir")
        return super().listdir(path)


@pytest.mark.parametrize("elements", [1, 10, 300])
def test_a_poll_tick_is_one_operation_however_many_streams(tmp_path: Path, elements: int) -> None:
    transport = Counting()
    store = BatchStore.create(str(tmp_path / "work"), "t", transport)
    for k in range(elements):
        Path(store.stream_path(f"J_{k}")).write_bytes(b"records")
    transport.calls.clear()
    grown = store.scan_streams({})
    assert len(grown) == elements and transport.calls == ["scan"]
    assert store.scan_streams({name: 7 for name in grown}) == {}
    assert transport.calls == ["scan", "scan"]
