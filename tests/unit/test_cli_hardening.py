"""The ``corral`` command on work dirs it must not trust blindly (issue 11): planted pickles
run nothing, foreign files do not crash the listing, text from a work dir cannot drive the
terminal, a folder others can write is refused, a job-level failure shows the element's
stderr, and a call whose local process is gone is not shown as running."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral.cli.app import UNSAFE, main
from corral.cli.display import printable
from corral.errors import FormatError, UnsafeWorkDirError
from corral.store import records
from corral.store.batch import BatchStore
from corral.store.claims import process_gone
from corral.store.frames import encode_frame
from corral.store.protocol import ChunkClaim, Claim, Mode, WorkerPlan
from corral.store.records import CallStatus
from corral.store.streams import Record
from corral.transports.local import LocalTransport

from .fakes import claim_record, result_record, start_record, write_stream

HOST = os.uname().nodename

#: Every control character but newline and tab: none may reach the terminal.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def make_batch(root: str, calls: int = 2, function: str = "made") -> BatchStore:
    """A local batch folder, written through the store as corral writes it, with no call
    taken yet."""
    store = BatchStore.create(root, "made", LocalTransport())
    manifest = {"function": function, "calls": calls, "backend": "local", "created": 1_700_000_000.0}
    store.write_batch(manifest, b"", [b""] * calls)
    store.write_submission(
        0, WorkerPlan(mode=Mode.PULL, tasks=tuple((c, 0) for c in range(calls))), "#!/bin/sh\n"
    )
    store.record_job_id(0, "L1")
    return store


def take(store: BatchStore, element: str, call: int, host: str, pid: int, *after: Record) -> None:
    """Element ``element`` (process ``pid`` on ``host``) starts and takes call ``call`` (its
    position in submission 0) as the worker does: a chunk claim, then Start and Claim in its
    stream; then it writes ``after``."""
    assert store.claim_chunk(0, call, ChunkClaim(Claim(element, host, pid), 1))
    write_stream(store, element, start_record(element, host, pid), claim_record(0, call), *after)


def dead_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- the sanitizer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "multiline", "one_line"),
    [
        ("a\x1b]0;pwned\x07b", "ab", "ab"),  # OSC: retitles the window
        ("a\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\b", "alinkb", "alinkb"),  # OSC ended by ST
        ("\x1b[2Jcleared", "cleared", "cleared"),  # CSI: clears the screen
        ("\x1b[31mred\x1b[0m", "red", "red"),  # colours leave no debris
        ("a\x9b2Jb", "ab", "ab"),  # the 8-bit CSI
        ("a\x9d0;t\x9cb", "ab", "ab"),  # the 8-bit OSC and ST
        ("ok\x1bcreset", "okreset", "okreset"),  # ESC c: resets the terminal
        ("real\rfake", "real\nfake", "real fake"),  # CR cannot overwrite a line
        ("a\r\nb", "a\nb", "a b"),
        ("x\x08\x08y\x7f\x00\x07", "xy", "xy"),  # backspace, DEL, NUL, BEL
        ("lone \x1b", "lone ", "lone "),
        ("\u202eexe.txt", "exe.txt", "exe.txt"),  # a bidi override
        ("line\n\tindented", "line\n\tindented", "line  indented"),
        ("plain: ünïcode · ok", "plain: ünïcode · ok", "plain: ünïcode · ok"),
    ],
)
def test_printable(raw: str, multiline: str, one_line: str) -> None:
    assert printable(raw) == multiline
    assert printable(raw, multiline=False) == one_line


def test_printable_leaves_no_control_character_in_any_text() -> None:
    every = "".join(map(chr, range(0x100))) + "\u202e\u2066\x1b[1;2H\x1b]0;t\x07"
    assert not CONTROL.search(printable(every))
    assert not CONTROL.search(printable(every, multiline=False))
    assert "\n" not in printable(every, multiline=False) and "\t" not in printable(every, multiline=False)


# -- planted pickles and foreign files ---------------------------------------------------------------


class Planted:
    """A pickle that, when loaded, creates the folder ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (self.marker,)


def test_a_planted_pickle_runs_nothing_and_is_reported(workdir: str, tmp_path: Path, capsys) -> None:
    store = make_batch(workdir, calls=3)
    marker = str(tmp_path / "it ran")
    evil = pickle.dumps(Planted(marker))
    assert not os.path.exists(marker)
    for name in ("results/0.0.pkl", "engine.pkl", "function.pkl", "subs/0.pkl", "checkpoints/0.pkl"):
        Path(store.path, name).write_bytes(evil)
    Path(store.path, "results", "1.0.pkl").write_bytes(b"corral-outcome 1\n{trunc")  # cut mid-write
    # Calls 0 and 1 point to their large-result files; call 2's Result is a real record with
    # an evil payload inline: never loaded.
    assert store.claim_chunk(0, 0, ChunkClaim(Claim("L1_0", HOST, os.getpid()), 3))
    write_stream(
        store, "L1_0", start_record("L1_0", HOST, os.getpid()), claim_record(0, 0, 3),
        result_record(0, 0, in_file=True), result_record(1, 0, in_file=True), result_record(2, 0, evil),
    )  # fmt: skip

    code, out, err = run(capsys, "status", "--dir", workdir)
    assert (code, err) == (0, "")
    assert out.splitlines()[2].endswith("1 completed · 2 failed · 0 running · 0 pending")
    code, out, _ = run(capsys, "status", store.name, "--dir", workdir)
    assert code == 0
    assert "  call 0  CorralError: unreadable outcome results/0.0.pkl: not a corral outcome file" in out
    assert "  call 1  CorralError: unreadable outcome results/1.0.pkl: " in out
    for call in ("0", "1", "2"):
        assert run(capsys, "logs", store.name, call, "--dir", workdir)[0] == 0
    code, out, _ = run(capsys, "logs", store.name, "0", "--dir", workdir)
    assert out.startswith(f"call 0 of {store.name}, attempt 0: failed\n")
    assert out.endswith(
        "== failure ==\nCorralError: unreadable outcome results/0.0.pkl: not a corral outcome file\n"
    )
    assert not os.path.exists(marker)  # nothing was unpickled


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("subs/0.json", b"\x80not json"),
        ("subs/0.json", b'{"tasks": [[0], "x", [1, 0, 2], [true, 0], null]}'),
        ("subs/0.json", b"[1, 2]"),
        ("subs/0.job", b"\xff\xfe"),
        ("attempts/0.0.json", b"[]"),
        ("attempts/0.0.json", b"{oops"),
        ("claims/0.0", b"\xff\xfe\x00"),
        ("claims/0.0", b""),
        ("claims/0.0", b"../../../etc/passwd host 1"),
        ("claims/0.0", b"../../../etc/passwd host 1 2"),
        ("streams/L1_0.log", b"\xff\xfe\x00 not a frame"),
        ("streams/L1_0.log", encode_frame(b"[1, 2]")),  # a whole frame, not a record
        ("streams/L1_0.log", encode_frame(b'{"k":"claim","s":0,"p":0,"n":99999999999,"o":0,"e":0,"t":1}')),
        ("streams/L1_0.log", encode_frame(b'{"k":"start","el":"../../../etc/passwd","h":"x","pid":1}')),
        ("streams/L1_0.out", b"\xff\xfe\x00"),
        ("results/0.0.pkl", b"\x80not an outcome"),  # no Result points to it
    ],
)
def test_a_foreign_file_never_crashes_the_listing(workdir: str, name: str, content: bytes, capsys) -> None:
    store = make_batch(workdir)
    Path(store.path, name).write_bytes(content)
    summary = records.summarize(store.path)
    assert summary.calls == 2
    code, out, err = run(capsys, "status", "--dir", workdir)
    assert (code, err) == (0, "") and "unreadable" not in out
    assert run(capsys, "status", store.name, "--dir", workdir)[0] == 0
    code, out, _ = run(capsys, "logs", store.name, "0", "--dir", workdir)
    assert code == 0 and "etc/passwd" not in out  # a claim cannot name a log outside logs/


@pytest.mark.parametrize(
    "manifest",
    [
        {"function": "f", "calls": 10**12, "backend": "local", "created": 0},  # more than stored
        {"function": "f", "calls": -1, "backend": "local", "created": 0},
        [1, 2, 3],
    ],
)
def test_a_foreign_manifest_is_listed_as_unreadable(workdir: str, manifest: object, capsys) -> None:
    good, bad = make_batch(workdir), make_batch(workdir)
    Path(bad.path, "manifest.json").write_text(json.dumps(manifest))
    code, out, _ = run(capsys, "status", "--dir", workdir)
    assert code == 0 and len(out.splitlines()) == 4
    assert f"{bad.name}  " in out and "unreadable: " in out
    assert f"{good.name}  " in out and "0 completed · 0 failed · 0 running · 2 pending" in out


def test_nonsense_creation_times_do_not_crash(workdir: str, capsys) -> None:
    store = make_batch(workdir)
    manifest = json.loads(Path(store.path, "manifest.json").read_text())
    for created in ("yesterday", 1e300, None):
        Path(store.path, "manifest.json").write_text(json.dumps({**manifest, "created": created}))
        code, out, _ = run(capsys, "status", "--dir", workdir)
        assert code == 0 and out.splitlines()[2].split()[:4] == [store.name, "made", "local", "?"]


# -- text from the work dir on the terminal -------------------------------------------------------------


def test_nothing_printed_from_a_work_dir_can_drive_the_terminal(workdir: str, capsys) -> None:
    evil = "\x1b]0;pwned\x07\x1b[2J\r\x9b1A\x08"
    store = make_batch(workdir, calls=2, function=f"fn{evil}\nFAKE  ROW")
    os.rename(store.path, f"{store.path}{evil}")  # a folder name is text from the work dir too
    store = BatchStore(f"{store.path}{evil}", LocalTransport())
    message = f"bad {evil}\nsecond line"
    out, err = f"out {evil}\n".encode(), f"err {evil}\n".encode()
    Path(store.output_path("L1_0", "out")).write_bytes(out)
    Path(store.output_path("L1_0", "err")).write_bytes(err)
    failed = result_record(
        0, 0, ok=False, out=len(out), err=len(err), type_name="builtins.ValueError", message=message,
        traceback=f"Traceback{evil}\n", host=f"host{evil}",
    )  # fmt: skip
    write_stream(store, "L1_0", start_record("L1_0", f"host{evil}", os.getpid()), claim_record(0, 0), failed)
    Path(store.element_log("L1_0", "err")).write_text(f"element {evil}\n")
    outputs = [
        run(capsys, "status", "--dir", workdir),
        run(capsys, "status", "made", "--dir", workdir),
        run(capsys, "logs", "made", "0", "--dir", workdir),
        run(capsys, "logs", "made", "0", "--out", "--dir", workdir),
        run(capsys, "logs", "made", "0", "--err", "--dir", workdir),
        run(capsys, "logs", "made", "5", "--dir", workdir),  # an error that names the batch
    ]
    for _, out, err in outputs:
        assert not CONTROL.search(out + err), repr(out + err)
    listing = outputs[0][1].splitlines()
    assert len(listing) == 3 and "FAKE  ROW" in listing[2]  # the name's newline added no row
    assert "function  fn  FAKE  ROW\n" in outputs[1][1]
    assert "  call 0  ValueError: bad  ...\n" in outputs[1][1]  # its first line only
    assert all(
        line.startswith(("call 0 of ", "==", "out", "err", "Traceback"))
        for line in outputs[2][1].splitlines()
        if line
    )
    assert outputs[3][1] == "out \n\n"  # the CR became a line break
    assert "there is no call 5" in outputs[5][2] and outputs[5][0] == 1


# -- trust -------------------------------------------------------------------------------------------------


def test_a_work_dir_others_can_write_is_refused(workdir: str, tmp_path: Path, capsys) -> None:
    store = make_batch(workdir)
    os.chmod(workdir, 0o777)
    try:
        code, out, err = run(capsys, "status", "--dir", workdir)
        assert (code, out) == (UNSAFE, "")
        assert err.startswith(f"corral: error: refusing the work dir folder {workdir}: ")
        assert "0777" in err and "Traceback" not in err
        assert run(capsys, "logs", "made", "0", "--dir", workdir)[0] == UNSAFE
        assert run(capsys, "--dir", workdir)[0] == 2  # --dir belongs to the commands
    finally:
        os.chmod(workdir, 0o700)
    os.chmod(store.path, 0o770)  # one batch folder the group can write: refused alone
    other = make_batch(workdir)
    code, out, _ = run(capsys, "status", "--dir", workdir)
    assert code == 0
    assert re.search(rf"{store.name} .*unreadable: refusing the work dir folder {re.escape(store.path)}", out)
    assert re.search(rf"{other.name} +made +local .* 2 pending", out)
    assert run(capsys, "status", store.path)[0] == UNSAFE  # named by path
    with pytest.raises(UnsafeWorkDirError):
        records.summarize(store.path)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_work_dir_of_another_user_is_refused(workdir: str, capsys) -> None:
    make_batch(workdir)
    os.chown(workdir, 65534, 65534)  # nobody
    code, _, err = run(capsys, "status", "--dir", workdir)
    assert code == UNSAFE and "it belongs to " in err and "uid 65534" in err


def test_a_work_dir_reached_through_a_link_is_read(workdir: str, tmp_path: Path, capsys) -> None:
    store = make_batch(workdir)
    link = tmp_path / "link"
    link.symlink_to(workdir)
    code, out, _ = run(capsys, "status", "--dir", str(link))
    assert code == 0 and store.name in out


# -- the element's stderr --------------------------------------------------------------------------------


IMPORT_FAILURE = """Traceback (most recent call last):
  File "/usr/lib/python3.11/runpy.py", line 198, in _run_module_as_main
ModuleNotFoundError: No module named 'helpers_mod'
"""


def test_a_call_without_an_outcome_shows_its_elements_stderr(workdir: str, capsys) -> None:
    store = make_batch(workdir)
    take(store, "L1_0", 0, "node9", 4242)  # another host: still "running" as far as we can tell
    Path(store.element_log("L1_0", "err")).write_text(IMPORT_FAILURE)
    logs = records.call_logs(store.path, 0)
    assert (logs.status, logs.element, logs.element_stderr) == (CallStatus.RUNNING, "L1_0", IMPORT_FAILURE)
    assert logs.element_stderr_path == os.path.join(store.path, "logs", "job-L1_0.err")
    code, out, _ = run(capsys, "logs", store.path, "0")
    assert code == 0
    assert f"== stderr of L1_0, the array element of this call ({logs.element_stderr_path}) ==\n" in out
    assert out.endswith(
        "(the call has no stderr of its own; an element may run several calls)\n" + IMPORT_FAILURE
    )
    assert run(capsys, "logs", store.path, "0", "--err") == (0, "", "")  # the call's own stream


def test_a_job_that_died_shows_its_elements_stderr_with_the_failure(workdir: str, capsys) -> None:
    store = make_batch(workdir)
    store.record_attempt(
        0, 0, {"attempt": 0, "job_id": "L1_0", "state": "FAILED", "node": "", "reason": "exit code 3"}
    )
    take(store, "L1_0", 0, "node9", 4242)
    Path(store.output_path("L1_0", "err")).write_text("started\n")  # the call's own, before it died
    Path(store.element_log("L1_0", "err")).write_text("\n".join(f"line {n}" for n in range(100)) + "\n")
    code, out, _ = run(capsys, "logs", store.path, "0")
    assert code == 0
    assert "== stderr of L1_0, the array element of this call (last 40 of 100 lines, " in out
    assert "(the call has no outcome; " in out
    assert "line 59\n" not in out and "line 60\nline 61\n" in out
    assert out.endswith("line 99\n== failure ==\nJobFailedError: job L1_0 ended FAILED: exit code 3\n")


def test_a_call_with_its_own_stderr_and_outcome_does_not_show_the_elements(workdir: str, capsys) -> None:
    store = make_batch(workdir)
    Path(store.output_path("L1_0", "err")).write_text("mine\n")
    take(store, "L1_0", 0, HOST, os.getpid(), result_record(0, 0, pickle.dumps(None), err=len("mine\n")))
    Path(store.element_log("L1_0", "err")).write_text("not about this call\n")
    assert records.call_logs(store.path, 0).element_stderr == ""
    assert "not about this call" not in run(capsys, "logs", store.path, "0")[1]


# -- calls whose local process is gone ---------------------------------------------------------------------


def test_parse_claim() -> None:
    assert Claim.parse(b"4242_0 node1 99") == Claim("4242_0", "node1", 99)
    assert Claim.parse(b"client-cancel").by_client
    bad = ["", "a b", "a/b h 1", "x h 0", "x h -1", "x h 1e3", f"x h {2**31}", "x h ٣"]
    for text in bad:
        with pytest.raises(FormatError):
            Claim.parse(text.encode())


def test_a_call_whose_local_process_is_gone_is_lost(workdir: str, capsys) -> None:
    store = make_batch(workdir, calls=4)
    take(store, "L1_0", 0, HOST, dead_pid())  # gone: lost
    take(store, "L1_1", 1, HOST, os.getpid())  # this test's own process: running
    take(store, "L1_2", 2, "elsewhere", dead_pid())  # another host: cannot be seen, running
    s = records.summarize(store.path)
    assert s.statuses == [CallStatus.LOST, CallStatus.RUNNING, CallStatus.RUNNING, CallStatus.PENDING]
    code, out, _ = run(capsys, "status", store.path)
    assert code == 0
    assert "calls     4: 0 completed · 0 failed · 1 lost · 2 running · 1 pending" in out
    assert "lost calls: 0\n" in out
    code, out, _ = run(capsys, "status", "--dir", workdir)
    assert out.splitlines()[2].endswith("0 completed · 0 failed · 1 lost · 2 running · 1 pending")
    code, out, _ = run(capsys, "logs", store.path, "0")
    assert out.startswith(f"call 0 of {store.name}, attempt 0: lost\n")
    assert out.endswith(
        "== lost ==\nit started on this machine, and its process is gone without leaving an outcome\n"
    )


def test_a_zombie_or_a_reused_pid_is_not_the_claimant() -> None:
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        while open(f"/proc/{zombie.pid}/stat", "rb").read().split(b")")[-1].split()[0] != b"Z":
            time.sleep(0.05)  # it has exited, and nobody has reaped it
        assert process_gone(Claim("L1_0", HOST, zombie.pid), time.time())
    finally:
        zombie.wait()
    me = Claim("L1_0", HOST, os.getpid())
    assert not process_gone(me, time.time())
    # A claim made long before this process started was made by another process with its pid.
    assert process_gone(me, time.time() - 24 * 3600)
    assert not process_gone(Claim("L1_0", "elsewhere", dead_pid()), time.time())


SCRIPT = """
import time, corral
def nap(x):
    time.sleep(120)
with corral.Executor("local", directory={workdir!r}) as executor:
    list(executor.map(nap, range(3)))
"""


def test_a_ctrl_c_d_map_leaves_no_call_running(workdir: str, tmp_path: Path) -> None:
    """Issue 11 item 14: after Ctrl-C its calls showed "running" forever."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(workdir=workdir))
    child = subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a Ctrl-C it sees
    )  # fmt: skip
    try:
        while not any(records.summarize(p).counts[CallStatus.RUNNING] for p in records.list_batches(workdir)):
            assert child.poll() is None, "the script ended before a call started"
            time.sleep(0.1)
        child.send_signal(signal.SIGINT)
        child.wait(timeout=60)
    finally:
        child.kill()
        child.wait()
    (path,) = records.list_batches(workdir)
    counts = records.summarize(path).counts
    # Lost, unless the interrupted script had time to record how its calls ended.
    ended = counts[CallStatus.LOST] + counts[CallStatus.FAILED] + counts[CallStatus.CANCELLED]
    assert counts[CallStatus.RUNNING] == 0 and ended >= 1
