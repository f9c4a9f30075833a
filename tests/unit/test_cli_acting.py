"""``corral cancel``, ``clean`` and ``attach`` on batches the local backend really runs, from
another process than the client that submitted them (a script run as a child process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral.cli.app import main
from corral.cli.cleaning import human, parse_duration
from corral.store import records
from corral.store.batch import BatchStore
from corral.store.records import CallStatus
from corral.transports.local import LocalTransport

X, C, F = CallStatus.CANCELLED, CallStatus.COMPLETED, CallStatus.FAILED

# A client with two batches: `naps` (6 calls that would sleep a minute, 2 at a time) and
# `quick` (2 calls that end once a file exists), on 4 local slots: both batches run.
CLIENT = """\
import os, sys, time, corral

RELEASE = sys.argv[2]  # a global of the script: sent with the function (sys.argv is the node's there)

def nap(x):
    time.sleep(60)
    return x

def quick(x):
    while not os.path.exists(RELEASE):
        time.sleep(0.05)
    return x * 10

work = sys.argv[1]
with corral.Executor("local", work, max_workers=2) as ex, corral.Executor("local", work) as other:
    naps = ex.map(nap, range(6))
    quicks = other.map(quick, range(2))
    print("quick:", list(quicks), flush=True)
    try:
        print("naps:", list(naps), flush=True)
    except Exception as error:
        print("naps:", type(error).__name__, flush=True)
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def wait_for(condition, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what}")
        time.sleep(0.1)


def batch_of(workdir: str, function: str) -> str:
    return next(p for p in records.list_batches(workdir) if records.summarize(p).function == function)


def running(workdir: str, function: str) -> int:
    try:
        return records.summarize(batch_of(workdir, function)).counts[CallStatus.RUNNING]
    except StopIteration:
        return 0


@pytest.fixture
def client(tmp_path: Path, workdir: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The client script, started; both batches have running calls when this returns."""
    monkeypatch.setenv("CORRAL_LOCAL_SLOTS", "4")
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    release = tmp_path / "release"
    proc = subprocess.Popen(
        [sys.executable, str(script), workdir, str(release)], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "CORRAL_LOCAL_SLOTS": "4"}, start_new_session=True,
    )  # fmt: skip
    wait_for(lambda: running(workdir, "nap") == 2 and running(workdir, "quick") == 2, "both batches to run")
    yield proc, release
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_cancel_cancels_that_batch_only_and_the_watching_client_sees_it(
    client, workdir: str, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    proc, release = client
    naps, quick = batch_of(workdir, "nap"), batch_of(workdir, "quick")
    code, out, _ = run(capsys, "cancel", os.path.basename(naps)[:8], "--dir", workdir)
    assert code == 0
    assert out.startswith(f"cancelled {os.path.basename(naps)}: ")
    assert ": 4 pending and 2 started calls; jobs " in out
    release.touch()  # the other batch ends as it would have
    output, _ = proc.communicate(timeout=60)
    assert "quick: [0, 10]" in output
    assert "naps: JobCancelledError" in output  # the client saw a cancel, not a failure or a loss
    assert records.summarize(naps).statuses == [X] * 6
    assert records.summarize(quick).statuses == [C, C]
    code, out, _ = run(capsys, "cancel", os.path.basename(naps), "--dir", workdir)
    assert code == 5 and "nothing to cancel" in out
    code, out, _ = run(capsys, "cancel", "--all", "--dir", workdir)
    assert code == 5 and "nothing to cancel in" in out


def test_cancel_stops_the_processes_a_dead_client_left_running(
    client, workdir: str, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    proc, _ = client
    proc.kill()  # the client alone: its elements lead sessions of their own and run on
    proc.wait()
    naps = batch_of(workdir, "nap")
    assert records.summarize(naps).counts[CallStatus.RUNNING] >= 1
    pids = list(records.open_calls(naps).here.values())
    assert pids and all(_alive(pid) for pid in pids)
    code, out, _ = run(capsys, "cancel", "--all", "--dir", workdir)
    assert code == 0
    assert {line.split()[1].rstrip(":") for line in out.splitlines()} == {
        os.path.basename(naps), os.path.basename(batch_of(workdir, "quick"))
    }  # fmt: skip
    wait_for(lambda: not any(_alive(pid) for pid in pids), "the elements to end")
    assert set(records.summarize(naps).statuses) == {X}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_cancel_needs_batches_or_all(workdir: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "cancel", "--dir", workdir)[0] == 2
    assert run(capsys, "cancel", "x", "--all", "--dir", workdir)[0] == 2


# -- clean --------------------------------------------------------------------------------------


def steady(x: int) -> int:
    return x


def shaky(x: int) -> int:
    if x == 1:
        raise ValueError("no")
    return x


def _age(path: str, days: float) -> None:
    """Make the batch ``days`` old, as clean reads it: its manifest's creation time."""
    store = BatchStore(path, LocalTransport())
    manifest = store.read_manifest()
    manifest["created"] = time.time() - days * 86400
    Path(path, "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def three(make_executor, workdir: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Three ended batches: ``old`` (10 days), ``old_failed`` (10 days, a failed call), ``new``."""
    ex = make_executor("local")
    list(ex.map(steady, range(2)))
    ex.map(shaky, range(2))
    time.sleep(0.01)
    list(ex.map(steady, range(3)))
    ex.shutdown(wait=True)
    old, old_failed, new = records.list_batches(workdir)
    _age(old, 10)
    _age(old_failed, 10)
    return {"old": old, "old_failed": old_failed, "new": new}


def test_clean_older_than_removes_only_old_batches_and_keeps_failed_ones_when_asked(
    three: dict[str, str], workdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "clean", "--older-than", "7d", "--keep-failed", "--dry-run", "--dir", workdir)
    assert code == 0
    assert f"would remove batch {os.path.basename(three['old'])} (" in out
    assert f"kept batch {os.path.basename(three['old_failed'])}: it has failed calls" in out
    assert os.path.basename(three["new"]) not in out
    assert all(os.path.isdir(p) for p in three.values())  # a dry run removes nothing

    code, out, _ = run(capsys, "clean", "--older-than", "7d", "--keep-failed", "--dir", workdir)
    assert code == 0 and "freed " in out
    assert records.list_batches(workdir) == [three["old_failed"], three["new"]]
    assert os.listdir(workdir) == sorted(os.listdir(workdir)) or True
    assert not [n for n in os.listdir(workdir) if n.startswith(".removing-")]

    code, out, _ = run(capsys, "clean", "--older-than", "7d", "--dir", workdir)
    assert code == 0 and records.list_batches(workdir) == [three["new"]]
    code, out, _ = run(capsys, "clean", "--older-than", "7d", "--dir", workdir)
    assert code == 5 and "nothing to remove" in out


def test_clean_keeps_a_live_batch_unless_forced(
    client, workdir: str, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    proc, release = client
    naps = batch_of(workdir, "nap")
    code, out, _ = run(capsys, "clean", os.path.basename(naps), "--dir", workdir)
    assert code == 5 and "its jobs still run" in out and os.path.isdir(naps)
    code, out, _ = run(capsys, "clean", os.path.basename(naps), "--force", "--dir", workdir)
    assert code == 0 and not os.path.exists(naps)
    release.touch()
    output, _ = proc.communicate(timeout=60)
    assert "quick: [0, 10]" in output


def test_a_sweep_is_cleaned_with_its_batches(three: dict[str, str], workdir: str, capsys) -> None:  # type: ignore[no-untyped-def]
    from corral.store.sweeps import SweepFiles

    files = SweepFiles(workdir, "search", LocalTransport())
    files.create()
    files.write_manifest(
        {"metric": "loss", "mode": "min", "batches": [{"batch": three["old"], "trials": [0, 1]}]}
    )
    code, _, err = run(capsys, "clean", os.path.basename(three["old"]), "--dir", workdir)
    assert code == 1 and "is a batch of sweep 'search'" in err and os.path.isdir(three["old"])
    code, out, _ = run(capsys, "clean", "--older-than", "1d", "--dir", workdir)
    # The sweep's manifest is new: the sweep (and the old batch in it) stays.
    assert (
        "sweep search" not in out and os.path.isdir(three["old"]) and not os.path.exists(three["old_failed"])
    )
    code, out, _ = run(capsys, "clean", "search", "--dir", workdir)
    assert code == 0 and "removed sweep search (" in out and "with 1 batches" in out
    assert not os.path.exists(files.path) and not os.path.exists(three["old"])
    assert records.list_batches(workdir) == [three["new"]]


def test_clean_refuses_a_batch_folder_others_can_write(three: dict[str, str], workdir: str, capsys) -> None:  # type: ignore[no-untyped-def]
    os.chmod(three["new"], 0o770)
    code, _, err = run(capsys, "clean", os.path.basename(three["new"]), "--dir", workdir)
    assert code == 3 and "chmod go-w" in err and os.path.isdir(three["new"])


def test_clean_refuses_a_batch_outside_the_work_dir(three: dict[str, str], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    code, _, err = run(capsys, "clean", three["new"], "--dir", str(tmp_path / "elsewhere"))
    assert code == 1 and "is not in the work dir" in err and os.path.isdir(three["new"])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600), ("90s", 90), ("1.5d", 129600)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["7", "d", "7y", "-1d", "7 days"])
def test_a_duration_without_a_unit_is_a_usage_error(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "clean", "--older-than", text)[0] == 2


def test_human_sizes() -> None:
    assert [human(n) for n in (512, 1536, 5 * 1024**2, 3 * 1024**3)] == [
        "512 B",
        "1.5 KiB",
        "5.0 MiB",
        "3.0 GiB",
    ]


# -- attach -------------------------------------------------------------------------------------


def odd(x: int) -> object:
    if x == 2:
        raise KeyError("two")
    return {0: None, 1: [1.5, "a"], 3: (3, 3), 4: float("nan")}[x]


def test_attach_prints_the_results_as_json_lines_and_exits_4_on_a_failed_call(
    make_executor, workdir: str, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    ex = make_executor("local")
    ex.map(odd, range(5))
    ex.shutdown(wait=True)
    (batch,) = records.list_batches(workdir)
    code, out, err = run(capsys, "attach", os.path.basename(batch), "--results", "--dir", workdir)
    assert code == 4
    assert [json.loads(line) for line in out.splitlines()] == [
        {"call": 0, "value": None},
        {"call": 1, "value": [1.5, "a"]},
        {"call": 2, "error": "KeyError: 'two'"},
        {"call": 3, "repr": "(3, 3)"},
        {"call": 4, "repr": "nan"},
    ]
    assert "ended: 5/5 ended · 4 completed · 1 failed; failed or cancelled calls: 2" in err
    code, out, _ = run(capsys, "attach", os.path.basename(batch), "--json", "--dir", workdir)
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 4 and lines[-1]["event"] == "end" and lines[-1]["failed_calls"] == [2]
    assert (lines[-1]["completed"], lines[-1]["failed"], lines[-1]["calls"]) == (4, 1, 5)


def test_attach_waits_for_a_running_batch(client, workdir: str, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    proc, release = client
    proc.kill()  # nobody watches the batch now but attach
    proc.wait()
    quick = batch_of(workdir, "quick")
    release.touch()
    code, out, _ = run(capsys, "attach", os.path.basename(quick), "--results", "--json", "--dir", workdir)
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert [line for line in lines if "call" in line] == [{"call": 0, "value": 0}, {"call": 1, "value": 10}]
    assert lines[-1]["event"] == "end" and lines[-1]["completed"] == 2
    assert all(line["event"] == "progress" for line in lines if "event" in line and line is not lines[-1])
    run(capsys, "cancel", "--all", "--dir", workdir)  # the naps


# -- what cancel reads and writes, on a folder written by hand ------------------------------------


def test_open_calls_are_what_cancel_acts_on(workdir: str) -> None:
    from .test_cli import handmade

    found = records.open_calls(handmade(workdir))
    assert (found.backend, found.pending, found.started) == ("slurm", [(0, 0), (4, 1)], [(1, 0)])
    assert found.elements == {(1, 0): ("4242_0", "node1")}
    assert found.job_ids == ["4242", "4250"]  # each plans an open call
    assert found.here == {}  # its elements ran on other hosts


def test_a_recorded_cancel_shows_as_cancelled_only_for_a_marked_attempt(workdir: str) -> None:
    from corral.job import Attempt

    from .test_cli import handmade

    path = handmade(workdir)
    store = BatchStore(path, LocalTransport())
    P, R = CallStatus.PENDING, CallStatus.RUNNING
    assert records.summarize(path).statuses == [P, R, X, F, P, C, C, C]
    store.record_attempt(1, 0, Attempt(0, "4242_0", "CANCELLED", "node1", "scancel by hand").to_json())
    store.mark_cancel(3, 0)  # marked, but its job had ended TIMEOUT: failed all the same
    assert records.summarize(path).statuses == [P, F, X, F, P, C, C, C]
    store.mark_cancel(1, 0)  # what corral cancel writes before it cancels the job
    assert records.summarize(path).statuses == [P, X, X, F, P, C, C, C]
