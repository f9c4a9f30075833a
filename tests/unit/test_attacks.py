"""Attacks on a work dir by a second real user (``nobody``), against the victim (these tests
run as root; root can write anywhere, so the attacker must be someone else).

Every attack plants a real exploit: a pickle that, when loaded, creates a marker file in a
folder of the victim's. Each test asserts that the victim's client, worker or ``attach``
refuses with an error naming the path, its owner and mode, and that the marker never
appears. The attacker's steps run in ``/usr/bin/python3`` as ``nobody``, in a shared folder
anyone may write (as ``/tmp`` or a shared project folder would be), outside the victim's
private pytest folders, which nobody else can reach.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import corral
from corral import UnsafeWorkDirError
from corral.engine.planning import Plan
from corral.store.batch import BatchStore, Outcome, encode_outcome
from corral.store.streams import encode_record
from corral.transports.local import LocalTransport
from corral.worker.run import pack_function

from .fakes import result_record

ATTACKER = "nobody"
NOBODY = 65534
ATTACKER_PYTHON = "/usr/bin/python3"  # not the victim's interpreter, which lives under /root

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists(ATTACKER_PYTHON),
    reason="needs root, to run the attacker's steps as nobody",
)


class Exploit:
    """Creates ``marker`` when unpickled: what a planted pickle would do as the victim."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (self.marker, "w"))


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "exploit-ran"
    yield path
    assert not path.exists(), "the planted pickle was loaded: the attacker's code ran as the victim"


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder everyone can write and rename things in (no sticky bit)."""
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="corral-attack-"))
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def attack(script: str, *args: str) -> None:
    """Run the attacker's ``script`` as nobody; it sees ``args`` as sys.argv[1:]."""
    done = subprocess.run(
        [ATTACKER_PYTHON, "-c", textwrap.dedent(script), *args],
        user=ATTACKER,
        group="nogroup",  # nobody's own group, and none of root's
        extra_groups=[],
        env={"PATH": "/usr/bin:/bin", "HOME": "/"},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"the attacker's own steps failed: {done.stderr}"


# The attacker's steps: write files (hex-encoded contents) under a folder, making folders as
# needed and every one of them writable by all, as an attacker who wants to keep access would.
PLANT = """
    import os, sys
    os.umask(0o022)
    root = sys.argv[1]
    for spec in sys.argv[2:]:
        rel, _, data = spec.partition("=")
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if data.startswith("->"):
            os.symlink(data[2:], path)
            continue
        if os.path.lexists(path):
            os.unlink(path)  # the folder is writable: the victim's own file goes
        with open(path, "wb") as handle:
            handle.write(bytes.fromhex(data))
    for folder, subs, _ in os.walk(root):
        if os.stat(folder).st_uid == os.getuid():
            os.chmod(folder, 0o777)
"""

# The attacker renames the victim's root away and puts a folder of theirs in its place.
SWAP_ROOT = """
    import os, sys
    os.rename(sys.argv[1], sys.argv[1] + ".victims")
    os.mkdir(sys.argv[1], 0o777)
    os.chmod(sys.argv[1], 0o777)
"""


def planted(rel: str, data: bytes) -> str:
    return f"{rel}={data.hex()}"


def exploit_outcome(marker: Path) -> bytes:
    """An outcome file in the right format whose value is the exploit."""
    return encode_outcome(Outcome(True, pickle.dumps(Exploit(marker))))


def wait_until(condition, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


def square_when(go: str, x: int) -> int:
    deadline = time.monotonic() + 60
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.02)
    return x * x


# -- the client -------------------------------------------------------------------------------


def test_the_client_refuses_a_work_dir_the_attacker_made_and_writes_nothing(
    shared: Path, marker: Path
) -> None:
    root = shared / ".corral"
    attack(PLANT, str(root), planted("trap/results/0.0.pkl", exploit_outcome(marker)))
    before = sorted(os.listdir(root))
    with corral.Executor("local", directory=str(root)) as ex:
        with pytest.raises(UnsafeWorkDirError) as caught:
            ex.submit(abs, -1)
    assert f"{root}: it belongs to nobody (uid 65534) with mode 0777, not to you" in str(caught.value)
    assert "directory= or the CORRAL_DIR" in str(caught.value)
    assert sorted(os.listdir(root)) == before


@pytest.mark.parametrize("how", ["file", "symlink"])
def test_the_client_refuses_a_stream_planted_in_a_swapped_root(
    shared: Path, marker: Path, tmp_path: Path, how: str
) -> None:
    """Issue item 1: the attacker can write the root's parent, so it can replace the root
    while a batch runs, and plant the element's stream with a Result whose value is the
    exploit; the batch folder's name and the element's id are no secret (they are on the
    worker's command line, which ``ps`` shows), nor is what the stream held so far (its
    records are predictable): the forged Result lands where the client reads next."""
    root = shared / ".corral"
    go = tmp_path / "go"
    cluster = corral.Cluster(corral.get_backend("local"), str(root))
    try:
        future = corral.Executor(cluster=cluster).submit(square_when, str(go), 3)
        batch = root / future.batch
        wait_until(future.running, "the call started")
        (log,) = [n for n in os.listdir(batch / "streams") if n.endswith(".log")]
        forged = (batch / "streams" / log).read_bytes() + encode_record(
            result_record(0, 0, pickle.dumps(Exploit(marker)))
        )
        attack(SWAP_ROOT, str(root))
        rel = f"{future.batch}/streams/{log}"
        if how == "file":
            attack(PLANT, str(root), planted(rel, forged))
        else:  # a link to a file the victim owns: only O_NOFOLLOW stands in the way
            bait = shared / "bait.log"
            bait.write_bytes(forged)
            os.chmod(bait, 0o600)
            attack(PLANT, str(root), f"{rel}=->{bait}")
        error = future.exception(timeout=60)
        assert isinstance(error, UnsafeWorkDirError)
        path = f"{root}/{rel}"
        if how == "file":
            assert f"refusing to unpickle {path}: it belongs to nobody (uid 65534) with mode 0644" in str(
                error
            )
        else:
            assert f"refusing to read {path}: it is a symbolic link" in str(error)
    finally:
        go.touch()
        cluster.close()


# -- the worker and attach ----------------------------------------------------------------------


def victims_batch(root: Path) -> BatchStore:
    store = BatchStore.create(str(root), "victim", LocalTransport())
    store.write_batch(
        {"function": "abs", "calls": 1, "backend": "local"}, pack_function(abs), [pickle.dumps(((-1,), {}))]
    )
    plan = Plan(0, 1, "static", ((0, 1, 0),), chunk=1).worker_plan()
    store.write_submission(0, plan, "#!/bin/bash\n", engine=pickle.dumps({"plan": None}))
    store.write_engine(pickle.dumps({}))
    return store


@pytest.fixture(params=["the attacker's batch folder", "the victim's, left group-writable"])
def trap(request: pytest.FixtureRequest, shared: Path, marker: Path) -> Path:
    """A batch folder holding an exploit as its function, engine settings and submission."""
    exploit = pickle.dumps(Exploit(marker))
    files = [planted(f, exploit) for f in ("function.pkl", "engine.pkl", "subs/0.pkl")]
    if request.param == "the attacker's batch folder":
        root = shared / ".corral"
        manifest = json.dumps({"function": "f", "calls": 1, "backend": "local", "created": 0})
        plan = Plan(0, 1, "static", ((0, 1, 0),), chunk=1).worker_plan().to_json()
        files += [
            planted("manifest.json", manifest.encode()),
            planted("subs/0.json", json.dumps(plan).encode()),
        ]
        attack(PLANT, str(root), *(f"trap/{f}" for f in files))
        return root / "trap"
    # The victim's own root (private) and batch, whose folder they opened to their group.
    root = shared / "victim"
    root.mkdir(mode=0o700)
    store = victims_batch(root)
    for folder in (store.path, os.path.join(store.path, "subs")):
        os.chown(folder, 0, NOBODY)  # nobody's group, nogroup, is the group
        os.chmod(folder, 0o770)
    os.chmod(root, 0o711)  # the attacker may pass through the root, not list or write it
    attack(PLANT, store.path, *files)
    return Path(store.path)


def test_the_worker_refuses_a_batch_folder_others_can_write(trap: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "corral.worker", str(trap), "0", "0", "1_0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"corral: {refusal(trap)}")
    if trap.owner() == "root":
        assert f"chmod go-w {trap}" in done.stderr


def test_attach_refuses_a_batch_folder_others_can_write(trap: Path) -> None:
    with pytest.raises(UnsafeWorkDirError) as caught:
        corral.attach(str(trap))
    assert str(caught.value).startswith(refusal(trap))


def refusal(trap: Path) -> str:
    """How the refusal of ``trap`` begins: the attacker's root is refused first; the
    victim's root passes and their batch folder does not."""
    if trap.owner() == "nobody":
        return f"refusing the work dir folder {trap.parent}: it belongs to nobody (uid 65534) with mode 0777"
    return (
        f"refusing the work dir folder {trap}: it belongs to root (uid 0) with mode 0770, so others can write"
    )


def test_the_worker_refuses_a_planted_function_even_in_a_private_folder(shared: Path, marker: Path) -> None:
    """The folder check aside, the file itself is checked as it is read: a function.pkl the
    victim did not write (here chowned to the attacker, as a hard link or restored backup
    would leave it) is never loaded."""
    root = shared / "victim"
    root.mkdir(mode=0o700)
    store = victims_batch(root)
    function = os.path.join(store.path, "function.pkl")
    with open(function, "wb") as handle:
        handle.write(pickle.dumps(Exploit(marker)))
    os.chown(function, NOBODY, -1)
    done = subprocess.run(
        [sys.executable, "-m", "corral.worker", store.path, "0", "0", "1_0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert f"refusing to unpickle {function}: it belongs to nobody (uid 65534)" in done.stderr
