"""The read-only view of work dirs (corral.store.records) and the ``corral`` command on top of it,
on batches the local backend really ran, and on a folder written by hand for the states a
local run cannot be caught in (running, cancelled, a job that died, a resubmitted call)."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral.cli.app import main
from corral.errors import CorralError
from corral.job import Attempt
from corral.store import records
from corral.store.batch import BatchStore
from corral.store.protocol import ChunkClaim, Claim, Mode, WorkerPlan
from corral.store.records import CallStatus, Failure
from corral.store.streams import Claim as ClaimRecord
from corral.transports.local import LocalTransport

from .fakes import claim_record, result_record, start_record, write_stream

C, F, X = CallStatus.COMPLETED, CallStatus.FAILED, CallStatus.CANCELLED
R, P, L = CallStatus.RUNNING, CallStatus.PENDING, CallStatus.LOST


def steady(x: int) -> int:
    print(f"steady {x}")
    return x


def shaky(x: int) -> int:
    print(f"out {x}")
    print(f"err {x}", file=sys.stderr)
    if x == 2:
        raise ValueError(f"bad input {x}\nmore detail")
    return x * 10


@pytest.fixture
def batches(make_executor, workdir: str) -> dict[str, str]:
    """Two finished batches in ``workdir``: ``ok`` (3 calls, all fine), then ``failed`` (4
    calls, call 2 raises); by their folders."""
    started = time.time()
    ex = make_executor("local")
    ex.map(steady, range(3))
    time.sleep(0.01)  # "created" orders the batches: keep the two apart
    ex.map(shaky, range(4))
    ex.shutdown(wait=True)  # every call has ended: nothing is left running
    paths = records.list_batches(workdir)
    assert [os.path.basename(p).split("-")[0] for p in paths] == ["steady", "shaky"]
    assert all(started <= records.summarize(p).created <= time.time() for p in paths)
    return {"ok": paths[0], "failed": paths[1]}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- records, on real batches -------------------------------------------------------------------


def test_summarize_a_finished_batch(batches: dict[str, str]) -> None:
    s = records.summarize(batches["ok"])
    assert (s.name, s.path, s.function, s.backend, s.calls) == (
        os.path.basename(batches["ok"]), batches["ok"], "steady", "local", 3
    )  # fmt: skip
    assert s.statuses == [C, C, C]
    assert s.counts == {C: 3, F: 0, X: 0, L: 0, R: 0, P: 0}
    assert s.failures == []
    assert len(s.job_ids) == 1 and s.job_ids[0]


def test_summarize_a_failed_batch(batches: dict[str, str]) -> None:
    s = records.summarize(batches["failed"])
    assert s.statuses == [C, C, F, C]
    assert s.counts == {C: 3, F: 1, X: 0, L: 0, R: 0, P: 0}
    assert s.failures == [Failure(2, 0, "builtins.ValueError", "bad input 2\nmore detail")]


def test_call_logs_of_a_failed_and_a_completed_call(batches: dict[str, str]) -> None:
    failed = records.call_logs(batches["failed"], 2)
    assert (failed.call, failed.attempt, failed.status) == (2, 0, F)
    assert failed.stdout == "out 2\n"
    assert failed.stderr.startswith("err 2\n") and "ValueError: bad input 2" in failed.stderr
    assert "raise ValueError" in failed.traceback
    assert failed.failure == Failure(2, 0, "builtins.ValueError", "bad input 2\nmore detail")
    # The call's output is its range of the output files of the element that ran it.
    streams = os.path.join(batches["failed"], "streams")
    assert re.fullmatch(re.escape(streams) + r"/L\d+-\d+_\d+\.out", failed.stdout_path)
    assert failed.stderr_path == failed.stdout_path.removesuffix(".out") + ".err"
    fine = records.call_logs(batches["failed"], 3)
    assert (fine.status, fine.stdout, fine.stderr, fine.traceback, fine.failure) == (
        C,
        "out 3\n",
        "err 3\n",
        "",
        None,
    )


def test_batches_are_found_by_name_prefix_or_path(batches: dict[str, str], workdir: str) -> None:
    path = batches["failed"]
    name = os.path.basename(path)
    assert records.find_batch(name, workdir) == path
    assert records.find_batch("shaky", workdir) == path
    assert records.find_batch(name[:-1], workdir) == path
    assert records.find_batch(path, "/nonexistent") == path  # a path needs no root
    assert records.find_batch(os.path.relpath(path), "/nonexistent") == path


def test_unknown_and_ambiguous_batches_are_explained(
    make_executor, batches: dict[str, str], workdir: str
) -> None:
    names = [os.path.basename(p) for p in (batches["ok"], batches["failed"])]
    expected = f"no batch 'nope' in {workdir}; batches there, newest first: {names[1]}, {names[0]}"
    with pytest.raises(CorralError, match=re.escape(expected)):
        records.find_batch("nope", workdir)
    ex = make_executor("local")
    ex.map(shaky, [0])
    ex.shutdown(wait=True)
    with pytest.raises(CorralError, match="'shaky' matches 2 batches") as info:
        records.find_batch("shaky", workdir)
    assert names[1] in str(info.value) and names[0] not in str(info.value)
    with pytest.raises(CorralError, match="holds no batches"):
        records.find_batch("steady", os.path.join(workdir, "empty"))
    with pytest.raises(CorralError, match="not a corral batch folder"):
        records.find_batch(workdir, None)


def test_calls_and_attempts_out_of_range(batches: dict[str, str]) -> None:
    for call in (4, -1):
        with pytest.raises(CorralError, match=rf"no call {call} in batch .*: it has calls 0 to 3"):
            records.call_logs(batches["failed"], call)
    with pytest.raises(CorralError, match="call 1 of batch .* has no attempt 1: its attempts are 0 to 0"):
        records.call_logs(batches["failed"], 1, attempt=1)


# -- records, on states caught by hand -------------------------------------------------------------


def handmade(root: str) -> str:
    """A SLURM batch as its folder looks mid-way, written through the store and the worker's
    stream writer as corral writes it."""
    store = BatchStore.create(root, "handmade", LocalTransport())
    manifest = {"function": "handmade", "calls": 8, "backend": "slurm", "created": 1_700_000_000.0}
    store.write_batch(manifest, b"", [b""] * 8)
    store.write_submission(
        0, WorkerPlan(mode=Mode.PULL, tasks=tuple((c, 0) for c in range(8))), "#!/bin/sh\n"
    )
    store.record_job_id(0, "4242")
    ok = pickle.dumps("value")

    def took(element: str, sub: int, pos: int) -> ClaimRecord:
        store.claim_chunk(sub, pos, ChunkClaim(Claim(element, "node1", 99), 1))
        return claim_record(sub, pos)

    # call 0: pending. 7: completed, then 1: running, both by element 4242_0 (still alive).
    write_stream(
        store, "4242_0", start_record("4242_0"), took("4242_0", 0, 7), result_record(7, 0, ok),
        took("4242_0", 0, 1),
    )  # fmt: skip
    # 2: cancelled by the client before any element took it (its chunk claim is the client's).
    store.claim_chunk(0, 2, ChunkClaim(Claim.CLIENT_CANCEL, 1))
    # 3: its job hit the time limit, without a result; the client recorded it and gave up.
    write_stream(store, "4242_1", start_record("4242_1", "node7", 12), took("4242_1", 0, 3))
    store.record_attempt(3, 0, Attempt(0, "4242_1", "TIMEOUT", "node7", "time limit").to_json())
    # 4: its node failed; resubmitted as attempt 1, which no element has taken yet.
    write_stream(store, "4242_2", start_record("4242_2", "node3", 5), took("4242_2", 0, 4))
    store.record_attempt(4, 0, Attempt(0, "4242_2", "NODE_FAIL", "node3").to_json())
    store.write_submission(1, WorkerPlan(mode=Mode.PULL, tasks=((4, 1), (5, 1), (6, 1))), "#!/bin/sh\n")
    store.record_job_id(1, "4250")
    # 5: lost at attempt 0, completed at attempt 1.
    store.record_attempt(5, 0, Attempt(0, "4242_3", "LOST").to_json())
    write_stream(
        store, "4250_0", start_record("4250_0", "node2", 7), took("4250_0", 1, 1), result_record(5, 1, ok)
    )
    # 6: thought lost and resubmitted, then its first result came late: the client cancelled
    # the resubmission, and the call completed by attempt 0.
    store.record_attempt(6, 0, Attempt(0, "4242_4", "LOST").to_json())
    write_stream(store, "4242_4", start_record("4242_4"), took("4242_4", 0, 6), result_record(6, 0, ok))
    store.mark_cancel(6, 1)
    Path(store.path, "results", ".1.0.pkl.77-1-0.tmp").write_bytes(b"half")  # a write under way
    return store.path


def test_every_state_from_the_files_alone(workdir: str) -> None:
    s = records.summarize(handmade(workdir))
    assert s.statuses == [P, R, X, F, P, C, C, C]
    assert s.counts == {C: 3, F: 1, X: 1, L: 0, R: 1, P: 2}
    assert s.job_ids == ["4242", "4250"]
    assert s.failures == [Failure(3, 0, "JobTimeoutError", "job 4242_1 ended TIMEOUT on node7: time limit")]


def test_call_logs_pick_the_attempt_that_decides(workdir: str) -> None:
    path = handmade(workdir)
    assert (records.call_logs(path, 4).attempt, records.call_logs(path, 4).status) == (1, P)
    first = records.call_logs(path, 4, attempt=0)
    assert first.status is F and first.failure == Failure(
        4, 0, "NodeFailureError", "job 4242_2 ended NODE_FAIL on node3"
    )
    assert (first.stdout, first.stderr, first.traceback) == ("", "", "")
    assert (records.call_logs(path, 6).attempt, records.call_logs(path, 6).status) == (0, C)
    assert records.call_logs(path, 6, attempt=1).status is X
    with pytest.raises(CorralError, match="its attempts are 0 to 1"):
        records.call_logs(path, 4, attempt=2)


# -- the command ---------------------------------------------------------------------------------


def test_status_lists_every_batch_oldest_first(batches: dict[str, str], workdir: str, capsys) -> None:
    code, out, err = run(capsys, "status", "--dir", workdir)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"2 batches in {workdir}"
    assert lines[1].split() == ["BATCH", "FUNCTION", "BACKEND", "CREATED", "CALLS"]
    ok, failed = lines[2:]
    assert ok.startswith(os.path.basename(batches["ok"]) + "  ")
    assert ok.split()[1:3] == ["steady", "local"]
    assert ok.endswith("  3 completed · 0 failed · 0 running · 0 pending")
    assert failed.startswith(os.path.basename(batches["failed"]) + "  ")
    assert failed.endswith("  3 completed · 1 failed · 0 running · 0 pending")
    assert ok.index("local") == failed.index("local")  # in columns


def test_status_skips_folders_being_written_and_shows_broken_ones(
    batches: dict[str, str], workdir: str, capsys
) -> None:
    os.mkdir(os.path.join(workdir, "half-made"))  # created, manifest not written yet
    broken = os.path.join(workdir, "broken")
    os.mkdir(broken)
    Path(broken, "manifest.json").write_text("{not json")
    assert records.list_batches(workdir) == [broken, batches["ok"], batches["failed"]]
    code, out, _ = run(capsys, "status", "--dir", workdir)
    assert code == 0 and out.startswith(f"3 batches in {workdir}\n")
    assert out.splitlines()[2].startswith("broken  ") and "unreadable: " in out.splitlines()[2]
    assert out.splitlines()[4].endswith("3 completed · 1 failed · 0 running · 0 pending")
    assert run(capsys, "status", "broken", "--dir", workdir)[0] == 1


def test_status_of_one_batch(batches: dict[str, str], workdir: str, capsys) -> None:
    code, out, err = run(capsys, "status", "shaky", "--dir", workdir)
    assert (code, err) == (0, "")
    summary = records.summarize(batches["failed"])
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(summary.created))
    assert out.splitlines() == [
        f"batch     {os.path.basename(batches['failed'])}",
        f"folder    {batches['failed']}",
        "function  shaky",
        "backend   local",
        f"created   {created}",
        "calls     4: 3 completed · 1 failed · 0 running · 0 pending",
        f"jobs      {summary.job_ids[0]}",
        "failed calls:",
        "  call 2  ValueError: bad input 2 ...",
    ]


def test_status_of_a_batch_mid_way(workdir: str, capsys) -> None:
    path = handmade(workdir)
    code, out, _ = run(capsys, "status", path)
    assert code == 0
    assert "calls     8: 3 completed · 1 failed · 1 cancelled · 1 running · 2 pending" in out
    assert "jobs      4242, 4250" in out
    assert "the scheduler is not asked" in out  # "running" means started
    assert out.endswith(
        "failed calls:\n  call 3  JobTimeoutError: job 4242_1 ended TIMEOUT on node7: time limit\n"
    )


def test_logs_of_a_failed_call(batches: dict[str, str], workdir: str, capsys) -> None:
    code, out, err = run(capsys, "logs", "shaky", "2", "--dir", workdir)
    assert (code, err) == (0, "")
    # The call's own part of the output files of the element that ran it.
    paths = records.call_logs(batches["failed"], 2)
    assert paths.stdout_path.startswith(os.path.join(batches["failed"], "streams", ""))
    assert out.startswith(
        f"call 2 of {os.path.basename(batches['failed'])}, attempt 0: failed\n"
        f"== stdout ({paths.stdout_path}) ==\nout 2\n== stderr ({paths.stderr_path}) ==\nerr 2\nTraceback"
    )
    assert 'raise ValueError(f"bad input {x}\\nmore detail")' in out
    # The worker wrote the traceback into the call's stderr: it is pointed to, not repeated.
    assert out.count("Traceback (most recent call last)") == 1
    assert out.endswith("more detail\n== traceback ==\n(the end of stderr, above)\n")


def test_logs_of_a_completed_call_and_of_one_stream(batches: dict[str, str], workdir: str, capsys) -> None:
    code, out, _ = run(capsys, "logs", batches["failed"], "1")
    assert code == 0
    assert out.splitlines()[0].endswith("attempt 0: completed")
    assert "== traceback ==" not in out and "== failure ==" not in out
    assert run(capsys, "logs", batches["failed"], "1", "--out") == (0, "out 1\n", "")
    assert run(capsys, "logs", batches["failed"], "1", "--err") == (0, "err 1\n", "")


def test_logs_of_a_job_that_died_and_of_a_call_not_started(workdir: str, capsys) -> None:
    path = handmade(workdir)
    code, out, _ = run(capsys, "logs", path, "3")
    assert code == 0
    assert out.endswith("== failure ==\nJobTimeoutError: job 4242_1 ended TIMEOUT on node7: time limit\n")
    code, out, _ = run(capsys, "logs", path, "4")
    assert out.splitlines()[0].endswith("attempt 1: pending")
    assert out.count("(empty)") == 2
    code, out, _ = run(capsys, "logs", path, "4", "--attempt", "0")
    assert "NodeFailureError: job 4242_2 ended NODE_FAIL on node3" in out


def test_errors_are_explained_without_a_traceback(batches: dict[str, str], workdir: str, capsys) -> None:
    code, out, err = run(capsys, "status", "nope", "--dir", workdir)
    assert (code, out) == (1, "")
    assert err.startswith("corral: error: no batch 'nope' in ") and "Traceback" not in err
    code, _, err = run(capsys, "logs", "shaky", "9", "--dir", workdir)
    name = os.path.basename(batches["failed"])
    assert (code, err) == (1, f"corral: error: there is no call 9 in batch {name}: it has calls 0 to 3\n")
    code, _, err = run(capsys, "logs", "shaky", "0", "--attempt", "5", "--dir", workdir)
    assert code == 1 and "has no attempt 5" in err


@pytest.mark.parametrize(
    "argv",
    [["logs"], ["logs", "b"], ["logs", "b", "two"], ["logs", "b", "1", "--out", "--err"], ["frobnicate"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and "usage: corral" in err


def test_help_exits_0(capsys) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "status" in out and "logs" in out


def test_the_work_dir_comes_from_the_configuration(
    batches: dict[str, str], workdir: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "status")
    assert (code, out) == (0, f"no batches in {tmp_path / '.corral'}\n")  # the default, ./.corral
    monkeypatch.setenv("CORRAL_DIR", workdir)
    code, out, _ = run(capsys, "status")
    assert code == 0 and out.startswith(f"2 batches in {workdir}\n")
    assert run(capsys, "logs", "shaky", "1", "--out")[1] == "out 1\n"
    project = tmp_path / "project"
    project.mkdir()
    (project / "corral.toml").write_text('directory = "elsewhere"\n')  # relative to the file
    monkeypatch.chdir(project)
    monkeypatch.delenv("CORRAL_DIR")
    assert run(capsys, "status")[1] == f"no batches in {project / 'elsewhere'}\n"


# scripts/test.sh installs the package, so the console script is beside the interpreter.
COMMANDS = [[sys.executable, "-m", "corral"], [str(Path(sys.executable).with_name("corral"))]]


@pytest.mark.parametrize("command", COMMANDS, ids=["python -m corral", "corral script"])
def test_the_command_runs_as_a_program(command: list[str], batches: dict[str, str], workdir: str) -> None:

    def corral(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *argv], capture_output=True, text=True, timeout=60, check=False)

    done = corral("status", "--dir", workdir)
    assert done.returncode == 0, done.stderr
    assert (
        os.path.basename(batches["ok"]) in done.stdout and os.path.basename(batches["failed"]) in done.stdout
    )
    done = corral("logs", "shaky", "3", "--out", "--dir", workdir)
    assert (done.returncode, done.stdout) == (0, "out 3\n")
    done = corral("logs", "nope", "0", "--dir", workdir)
    assert done.returncode == 1 and done.stderr.startswith("corral: error: no batch 'nope'")
    assert "Traceback" not in done.stderr
    assert corral("logs").returncode == 2


def test_corral_alone_shows_the_status(batches: dict[str, str], workdir: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CORRAL_DIR", workdir)
    alone = run(capsys)
    assert alone == run(capsys, "status")
    assert alone[0] == 0 and alone[1].startswith(f"2 batches in {workdir}\n")


def test_version(capsys) -> None:
    import corral

    assert run(capsys, "--version") == (0, f"corral {corral.__version__}\n", "")


def test_a_host_of_this_machine_runs_the_command_here_and_host_without_ssh_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config" / "corral"
    config.mkdir(parents=True)
    (config / "config.toml").write_text('[hosts.here]\npartition = "short"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("CORRAL_HOST", "here")  # a named set of settings for this machine
    assert main(["status", "--dir", str(tmp_path / "work")]) == 0
    assert "no batches" in capsys.readouterr().out.lower()
    assert main(["status", "--host", "here", "--dir", str(tmp_path / "work")]) == 1
    assert "has no ssh destination" in capsys.readouterr().err
