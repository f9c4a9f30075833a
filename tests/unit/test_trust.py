"""Work-dir trust (corral.trust, the local transport, batch folder creation): which folders
and files corral reads, how batch folders are named and created, and the errors a user sees.
Attacks by a second real user are in test_attacks.py."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import corral
import corral.store.batch
from corral import UnsafeWorkDirError, WorkDirError
from corral.store.batch import BatchStore, Outcome
from corral.store.protocol import ChunkClaim, Claim
from corral.store.streams import StreamWriter
from corral.transports.local import LocalTransport
from corral.trust import check_batch_dir, check_private_dir

NOBODY = 65534


def square(x: int) -> int:
    return x * x


def times_ten(x: int) -> int:
    return 10 * x


@pytest.fixture
def umask() -> Iterator[None]:
    """A umask that would leave new folders group- and world-readable: corral's own modes
    must not depend on the one a user happens to have."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def folder(path: Path, mode: int, uid: int | None = None) -> Path:
    path.mkdir()
    os.chmod(path, mode)  # chmod, not mkdir's mode: the umask plays no part
    if uid is not None:
        os.chown(path, uid, -1)
    return path


# -- the folder check ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o700, 0o750, 0o755])
def test_a_folder_of_ones_own_that_others_cannot_write_is_trusted(tmp_path: Path, mode: int) -> None:
    check_private_dir(str(folder(tmp_path / "root", mode)))


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777, 0o1777])
def test_a_folder_others_can_write_is_refused_with_path_owner_mode_and_fix(tmp_path: Path, mode: int) -> None:
    path = folder(tmp_path / "root", mode)
    with pytest.raises(UnsafeWorkDirError) as caught:
        check_private_dir(str(path))
    message = str(caught.value)
    assert str(path) in message
    assert f"root (uid 0) with mode {mode:04o}" in message
    assert f"chmod go-w {path}" in message
    assert (caught.value.path, caught.value.owner, caught.value.mode) == (str(path), 0, mode)
    assert isinstance(caught.value, PermissionError) and isinstance(caught.value, corral.CorralError)


def test_a_folder_someone_else_owns_is_refused_however_private(tmp_path: Path) -> None:
    path = folder(tmp_path / "root", 0o700, uid=NOBODY)
    with pytest.raises(
        UnsafeWorkDirError, match=r"nobody \(uid 65534\) with mode 0700, not to you"
    ) as caught:
        check_private_dir(str(path))
    assert "directory= or the CORRAL_DIR" in str(caught.value)
    assert caught.value.owner == NOBODY


def test_a_symbolic_link_or_a_file_is_not_a_work_dir_folder(tmp_path: Path) -> None:
    real = folder(tmp_path / "real", 0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(UnsafeWorkDirError, match=f"symbolic link \\(to {real}\\)"):
        check_private_dir(str(tmp_path / "link"))
    (tmp_path / "file").write_text("")
    with pytest.raises(UnsafeWorkDirError, match="not a folder"):
        check_private_dir(str(tmp_path / "file"))


def test_the_batch_check_covers_the_batch_folder_and_its_root(tmp_path: Path) -> None:
    root = folder(tmp_path / "root", 0o700)
    batch = folder(root / "batch", 0o700)
    check_batch_dir(str(batch))
    os.chmod(root, 0o777)
    with pytest.raises(UnsafeWorkDirError, match=f"folder {root}:"):
        check_batch_dir(str(batch))
    os.chmod(root, 0o700)
    os.chmod(batch, 0o770)
    with pytest.raises(UnsafeWorkDirError, match=f"folder {batch}:"):
        check_batch_dir(str(batch))


# -- the work dir root ----------------------------------------------------------------------------


def test_a_missing_root_is_created_private_whatever_the_umask(tmp_path: Path, umask: None) -> None:
    root = tmp_path / "a" / "b" / ".corral"
    LocalTransport().makedirs(str(root))
    for path in (root, root.parent, root.parent.parent):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_executor_refuses_a_group_writable_root_before_writing_anything(tmp_path: Path) -> None:
    root = folder(tmp_path / "shared", 0o770)
    with corral.Executor("local", directory=str(root)) as ex:
        with pytest.raises(
            UnsafeWorkDirError, match=f"{root}: it belongs to root \\(uid 0\\) with mode 0770"
        ):
            ex.submit(square, 3)
    assert os.listdir(root) == []


def test_executor_refuses_a_root_someone_else_owns(tmp_path: Path) -> None:
    root = folder(tmp_path / "theirs", 0o755, uid=NOBODY)
    with corral.Executor("local", directory=str(root)) as ex:
        with pytest.raises(UnsafeWorkDirError, match="nobody"):
            list(ex.map(square, [1, 2]))
    assert os.listdir(root) == []


def test_a_root_that_cannot_be_created_names_the_path_and_how_to_choose_another(tmp_path: Path) -> None:
    (tmp_path / "a file").write_text("")
    root = tmp_path / "a file" / ".corral"
    with pytest.raises(WorkDirError) as caught:
        LocalTransport().makedirs(str(root))
    assert f"cannot create {root} (Not a directory)" in str(caught.value)
    assert "directory=" in str(caught.value) and "CORRAL_DIR" in str(caught.value)
    assert isinstance(caught.value, OSError)


_READ_ONLY_CWD = textwrap.dedent(
    """
    import corral

    def square(x):
        return x * x

    with corral.Executor("local") as ex:
        try:
            ex.submit(square, 2)
        except corral.WorkDirError as exc:
            print(type(exc).__name__, exc)
    """
)


def test_a_read_only_working_directory_gives_a_work_dir_error_with_the_fix(tmp_path: Path) -> None:
    """Item 13: a script started in a read-only folder, with no directory= or CORRAL_DIR."""
    mount_point = folder(tmp_path / "ro", 0o755)
    shell = 'mount -t tmpfs -o ro tmpfs "$1" && cd "$1" && exec "$2" -c "$3"'
    argv = ["unshare", "--mount", "sh", "-c", shell, "sh", str(mount_point), sys.executable, _READ_ONLY_CWD]
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a read-only file system")
    env = {k: v for k, v in os.environ.items() if k != "CORRAL_DIR"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    if "mount:" in done.stderr:
        pytest.skip(f"cannot mount a read-only file system here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"WorkDirError cannot create {mount_point}/.corral (Read-only file system)")
    assert "directory=" in done.stdout and "CORRAL_DIR" in done.stdout
    assert "Traceback" not in done.stderr


# -- batch folders ------------------------------------------------------------------------------


def test_batch_folder_names_carry_96_random_bits(tmp_path: Path) -> None:
    store = BatchStore.create(str(tmp_path / "root"), "f", LocalTransport())
    random_part = store.name.rsplit("-", 1)[1]
    assert len(random_part) == 24 and int(random_part, 16) >= 0
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o700


def test_a_forced_name_collision_gives_two_folders_and_correct_results(
    make_executor, workdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 2: two batches whose random name parts are equal never share a folder."""
    suffixes = iter(["20260101-000000-" + "0" * 24] * 2 + ["20260101-000000-" + "1" * 24])
    drawn: list[str] = []

    def same_then_other() -> str:
        drawn.append(next(suffixes))
        return drawn[-1]

    monkeypatch.setattr(corral.store.batch, "_unique_suffix", same_then_other)
    ex = make_executor("local")
    first = ex.submit(times_ten, 1)
    assert first.batch  # asking for its batch submits it: the second call is a batch of its own
    second = ex.submit(times_ten, 2)
    assert (first.result(timeout=60), second.result(timeout=60)) == (10, 20)
    assert len(drawn) == 3  # the second batch found its first name taken and drew again
    assert sorted(os.listdir(workdir)) == [f"times_ten-{s}" for s in drawn[1:]]
    assert first.batch != second.batch


def test_a_taken_name_is_never_reused_even_when_it_is_an_empty_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = iter(["a", "a", "b"])
    monkeypatch.setattr(corral.store.batch, "_unique_suffix", lambda: next(names))
    root = str(tmp_path / "root")
    first = BatchStore.create(root, "f", LocalTransport())
    second = BatchStore.create(root, "f", LocalTransport())
    assert (first.name, second.name) == ("f-a", "f-b")


# -- files inside a batch folder ------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> BatchStore:
    return BatchStore.create(str(tmp_path / "root"), "f", LocalTransport())


def test_no_read_follows_a_symbolic_link(store: BatchStore, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.pkl"
    elsewhere.write_bytes(corral.store.batch.encode_outcome(Outcome(True, b"")))
    os.chmod(elsewhere, 0o600)
    os.symlink(elsewhere, os.path.join(store.path, "results", "0.0.pkl"))
    os.symlink(elsewhere, os.path.join(store.path, "manifest.json"))
    with pytest.raises(UnsafeWorkDirError, match="0.0.pkl: it is a symbolic link"):
        store.read_outcome(0, 0)
    with pytest.raises(UnsafeWorkDirError, match="manifest.json: it is a symbolic link"):
        store.read_manifest()
    os.symlink(elsewhere, store.stream_path("L1_0"))
    with pytest.raises(UnsafeWorkDirError, match="L1_0.log: it is a symbolic link"):
        store.read_stream("L1_0")


def test_writes_replace_a_symbolic_link_and_never_write_through_it(store: BatchStore, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"keep")
    result = os.path.join(store.path, "results", "0.0.pkl")
    os.symlink(target, result)
    store.write_outcome(0, 0, Outcome(True, b"value"))
    assert not os.path.islink(result) and store.read_outcome(0, 0).payload == b"value"
    claim = store.chunk_claim_path(0, 1)
    os.symlink(target, claim)
    assert store.claim_chunk(0, 1, ChunkClaim(Claim("L1_0", "node1", 1), 1)) is False
    os.symlink(target, os.path.join(store.path, "cancels", "1.0"))
    assert store.mark_cancel(1, 0) is False
    # An element never appends through a link planted as its stream or its output files.
    os.symlink(target, store.stream_path("L1_0"))
    with pytest.raises(OSError):
        StreamWriter(store.stream_path("L1_0"))
    assert target.read_bytes() == b"keep"


@pytest.mark.parametrize("how", ["group-writable", "someone else's"])
def test_a_pickle_that_is_not_the_users_alone_is_refused_unread(store: BatchStore, how: str) -> None:
    store.write_outcome(0, 0, Outcome(True, b"value"))
    path = os.path.join(store.path, "results", "0.0.pkl")
    if how == "group-writable":
        os.chmod(path, 0o620)
    else:
        os.chown(path, NOBODY, -1)
    with pytest.raises(UnsafeWorkDirError, match=f"refusing to unpickle {path}: it belongs to"):
        store.read_outcome(0, 0)


def test_data_records_are_read_whoever_owns_them(store: BatchStore) -> None:
    """Only pickles need the owner check: JSON records cannot run code."""
    store.record_attempt(0, 0, {"state": "FAILED"})
    os.chown(os.path.join(store.path, "attempts", "0.0.json"), NOBODY, -1)
    assert store.read_attempt(0, 0) == {"state": "FAILED"}


# -- temporary files of writers that died -----------------------------------------------------------

_KILLED_MID_WRITE = textwrap.dedent(
    """
    import os, sys
    from corral.transports.local import LocalTransport

    # Dies after writing the temporary file, before it takes its name.
    os.replace = os.link = lambda *args: os._exit(9)
    getattr(LocalTransport(), sys.argv[1])(sys.argv[2], b"half 1")
    """
)


@pytest.mark.parametrize(
    ("folder", "name", "how"),
    [("results", "0.0.pkl", "write_bytes"), ("claims", "0.0", "create_exclusive")],
)
def test_a_writer_killed_mid_write_leaves_a_temporary_that_is_swept(
    store: BatchStore, folder: str, name: str, how: str
) -> None:
    where = os.path.join(store.path, folder)
    done = subprocess.run([sys.executable, "-c", _KILLED_MID_WRITE, how, os.path.join(where, name)])
    assert done.returncode == 9
    (left,) = os.listdir(where)
    assert left.startswith(f".{name}~") and left.endswith(".tmp")
    # Readers skip it: no claim, no large result under its name.
    assert store.chunk_claims(0) == {}
    with pytest.raises(FileNotFoundError):
        store.read_large_result(0, 0)
    assert store.sweep_temporaries() == 1
    assert os.listdir(where) == []


def test_only_temporaries_of_dead_or_day_old_writers_are_swept(store: BatchStore) -> None:
    host = os.uname().nodename
    results = os.path.join(store.path, "results")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(gone.stdout)
    names = {
        "live": f".1.0.pkl~{host}~{os.getpid()}-1-1.tmp",  # a writer at work: kept
        "dead": f".2.0.pkl~{host}~{dead_pid}-1-1.tmp",
        "remote": f".3.0.pkl~elsewhere~{dead_pid}-1-1.tmp",  # its pid says nothing here: kept
        "remote-old": f".4.0.pkl~elsewhere~{dead_pid}-1-1.tmp",
        "old-format": f".5.0.pkl.{dead_pid}-1-1.tmp",  # kept until a day old
        "data": "6.0.pkl",
    }
    for name in names.values():
        Path(results, name).write_bytes(b"")
    day_ago = time.time() - 86400 - 60
    os.utime(os.path.join(results, names["remote-old"]), (day_ago, day_ago))
    assert store.sweep_temporaries() == 2
    assert sorted(os.listdir(results)) == sorted(names[k] for k in ("live", "remote", "old-format", "data"))


def square_when(go: str, x: int) -> int:
    while not os.path.exists(go):
        time.sleep(0.01)
    return x * x


def test_the_client_sweeps_a_finished_batch(make_executor, workdir: str, tmp_path: Path) -> None:
    ex = make_executor("local")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    go = tmp_path / "go"
    future = ex.submit(square_when, str(go), 4)
    name = f".9.0.pkl~{os.uname().nodename}~{int(gone.stdout)}-1-1.tmp"
    stale = Path(workdir, future.batch, "results", name)
    stale.write_bytes(b"")  # while the call waits: the batch cannot have finished yet
    go.touch()
    assert future.result(timeout=60) == 16
    deadline = time.monotonic() + 60  # the poll loop lets the batch go on its next tick
    while stale.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not stale.exists()


_ONE_BATCH = textwrap.dedent(
    """
    import corral

    with corral.Executor("local") as ex:
        print(ex.submit(abs, -5).result())
    """
)


def test_attach_sweeps_what_dead_writers_left(workdir: str) -> None:
    # The batch comes from a client that has exited: only attach can sweep what is planted now.
    env = {**os.environ, "CORRAL_DIR": workdir}
    done = subprocess.run([sys.executable, "-c", _ONE_BATCH], env=env, capture_output=True, text=True)
    assert done.stdout == "5\n", done.stderr
    (name,) = os.listdir(workdir)
    batch = Path(workdir, name)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    stale = [
        batch / f".engine.pkl~{os.uname().nodename}~{int(gone.stdout)}-1-1.tmp",  # this host, pid gone
        batch / "subs" / ".0.json~elsewhere~1-1-1.tmp",  # another host, a day old
    ]
    for path in stale:
        path.write_bytes(b"")
    day_ago = time.time() - 86400 - 60
    os.utime(stale[1], (day_ago, day_ago))
    attached = corral.attach(str(batch))
    assert attached.results(timeout=60) == [5]
    assert [p.exists() for p in stale] == [False, False]
