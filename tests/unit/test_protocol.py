"""The client–worker protocol (corral.store.protocol): plans, claims and requeues as typed
records, read back strictly; and the work-dir format version, refused clearly by every reader."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import corral
from corral.backends.local import LocalBackend
from corral.backends.sequential import SequentialBackend
from corral.backends.sge import SgeBackend
from corral.backends.slurm import SlurmBackend
from corral.cli.app import main as cli
from corral.engine.planning import Plan
from corral.errors import FormatError, FormatVersionError
from corral.store.batch import BatchStore
from corral.store.protocol import (
    BEAT,
    FORMAT_VERSION,
    ChunkClaim,
    Claim,
    Mode,
    Requeue,
    WorkerOptions,
    WorkerPlan,
    check_format,
)
from corral.transports.local import LocalTransport
from corral.worker.checkpoint import StopSignals
from corral.worker.run import pack_function, requeue, run_element

SLURM_REQUEUE = Requeue(argv=("scontrol", "requeue", "{job_id}"), job_id_env="SLURM_JOB_ID")

# -- plans ----------------------------------------------------------------------------------------


def good_plan() -> dict[str, Any]:
    plan = WorkerPlan(
        mode=Mode.PULL, tasks=((0, 0), (1, 2)), total_elements=3, strict=True, stdin=True, max_requeues=4,
        requeue=SLURM_REQUEUE, restart_env="SLURM_RESTART_COUNT",
    )  # fmt: skip
    return json.loads(json.dumps(plan.to_json()))


@pytest.mark.parametrize(
    "plan",
    [
        WorkerPlan(mode=Mode.STATIC, tasks=((0, 0), (1, 0), (2, 0)), chunk=2),
        WorkerPlan(
            mode=Mode.PULL,
            tasks=((5, 1),),
            first_element=2,
            total_elements=4,
            strict=True,
            stdin=True,
            max_requeues=3,
            requeue=SLURM_REQUEUE,
            restart_env="SLURM_RESTART_COUNT",
        ),  # fmt: skip
        WorkerPlan(mode=Mode.PULL, tasks=(), requeue=Requeue(exit_code=99, settle=0), restart_env="X_1"),
    ],
)
def test_a_plan_reads_back_as_written(plan: WorkerPlan) -> None:
    data = json.dumps(plan.to_json()).encode()
    assert WorkerPlan.from_json(data, "subs/0.json") == plan


def test_a_plan_takes_the_batch_options_and_the_mode_of_its_plan() -> None:
    options = WorkerOptions(strict=True, requeue=Requeue(exit_code=99), restart_env="CORRAL_RESTART_COUNT")
    plan = Plan(0, 2, "static", ((0, 4, 1),), chunk=2)  # the plan file's word still makes a Mode
    worker = plan.worker_plan(options, max_requeues=2)
    assert plan.mode is Mode.STATIC and worker.mode is Mode.STATIC
    assert worker.tasks == ((0, 1), (1, 1), (2, 1), (3, 1))
    assert (worker.options(), worker.max_requeues, worker.chunk) == (options, 2, 2)


def test_a_plans_tasks_are_stored_as_runs_of_consecutive_calls_with_one_attempt() -> None:
    tasks = ((0, 0), (1, 0), (2, 0), (5, 0), (6, 1), (7, 1), (3, 2), (4, 0))
    plan = WorkerPlan(mode=Mode.PULL, tasks=tasks)
    assert plan.to_json()["tasks"] == [[0, 3, 0], [5, 1, 0], [6, 2, 1], [3, 1, 2], [4, 1, 0]]
    assert WorkerPlan.from_json(json.dumps(plan.to_json()).encode(), "p") == plan
    big = WorkerPlan(mode=Mode.PULL, tasks=tuple((c, 0) for c in range(100_000)))
    assert big.to_json()["tasks"] == [[0, 100_000, 0]]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"mode": "dynamic"}, "'dynamic' is not a valid Mode"),
        ({"mode": None}, "None is not a valid Mode"),
        ({"tasks": [[0, 1]]}, "tasks must be a list of [first call, count >= 1, attempt] runs"),
        ({"tasks": [[0, -1, 0]]}, "tasks must be a list"),
        ({"tasks": [[0, 0, 0]]}, "tasks must be a list"),  # an empty run
        ({"tasks": [[0, 1, True]]}, "tasks must be a list"),
        ({"tasks": [[0, 1, 1.0]]}, "tasks must be a list"),
        ({"tasks": {"0": 0}}, "tasks must be a list"),
        ({"tasks": [[0, 10**9, 0]] * 11}, "tasks hold more than 10000000 calls"),
        ({"mode": "static", "chunk": 0}, "chunk must be a whole number >= 1, not 0"),
        ({"total_elements": 0}, "total_elements must be a whole number >= 1"),
        ({"first_element": "0"}, "first_element must be a whole number >= 0, not '0'"),
        ({"max_requeues": -1}, "max_requeues must be a whole number >= 0"),
        ({"strict": 1}, "strict must be true or false, not 1"),
        ({"stdin": "yes"}, "stdin must be true or false"),
        ({"restart_env": "A B"}, "restart_env must name an environment variable"),
        ({"requeue": "scontrol"}, "requeue must be an object of exit_code or argv"),  # format 1's
        ({"requeue": {"exit_code": 99, "argv": ["x", "{job_id}"]}}, "either an exit_code or an argv"),
        ({"requeue": {}}, "either an exit_code or an argv"),
        ({"requeue": {"exit_code": 0}}, "exit_code must be 1 to 255"),
        ({"requeue": {"exit_code": 300}}, "exit_code must be 1 to 255"),
        ({"requeue": {"argv": ["scontrol", "requeue"], "job_id_env": "J"}}, "must hold {job_id}"),
        ({"requeue": {"argv": ["x", "{job_id}"], "job_id_env": ""}}, "job_id_env must name"),
        ({"requeue": {"argv": "scontrol {job_id}", "job_id_env": "J"}}, "requeue argv must be a list"),
        ({"requeue": {"argv": ["x", "{job_id}"], "job_id_env": "J", "shell": True}}, "exit_code or argv"),
        ({"requeue": {"exit_code": 99, "settle": -1}}, "settle must be 0 to 3600"),
        ({"requeue": {"exit_code": 99, "settle": "1"}}, "settle must be a number"),
        ({"extra": 1}, "unknown ['extra']"),
        ({"stdin": ...}, "missing ['stdin']"),  # ... removes the field
    ],
)
def test_a_plan_is_read_strictly(change: dict[str, Any], says: str) -> None:
    record = {**good_plan(), **change}
    record = {k: v for k, v in record.items() if v is not ...}
    with pytest.raises(FormatError, match=r"^/w/b/subs/0\.json is not a corral submission plan: ") as caught:
        WorkerPlan.from_json(json.dumps(record).encode(), "/w/b/subs/0.json")
    assert says in str(caught.value)
    assert caught.value.path == "/w/b/subs/0.json" and isinstance(caught.value, ValueError)


@pytest.mark.parametrize("data", [b"", b"\xff", b"[]", b"null", b'{"mode": "pull"', b"[" * 100_000])
def test_a_plan_that_is_not_one_is_a_format_error(data: bytes) -> None:
    with pytest.raises(FormatError, match="^p is not a corral submission plan"):
        WorkerPlan.from_json(data, "p")


def test_the_version_1_plan_of_an_older_corral_is_refused() -> None:
    old = {"mode": "pull", "tasks": [[0, 0]], "chunk": 0, "first_element": 0, "total_elements": 1}
    with pytest.raises(FormatError, match=r"missing \['max_requeues', 'requeue', 'restart_env', 'stdin'"):
        WorkerPlan.from_json(json.dumps({**old, "strict": True}).encode(), "p")


# -- claims ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "claim"),
    [
        (b"4242_0 node1 99", Claim("4242_0", "node1", 99)),
        (b"L3_1 host.example.org 2147483647", Claim("L3_1", "host.example.org", 2**31 - 1)),
        (b"client-cancel", Claim.CLIENT_CANCEL),
    ],
)
def test_a_claim_reads_back_as_written(data: bytes, claim: Claim) -> None:
    assert Claim.parse(data) == claim and claim.encode() == data
    assert claim.by_client is (data == b"client-cancel")


@pytest.mark.parametrize(
    "data",
    [
        b"", b"client-cancel\n", b"4242_0 node1", b"4242_0 node1 99 extra", b"4242_0  node1 99",
        b"4242_0 node1 99\n", b"../x node1 99", b"a/b node1 1", b"x h 0", b"x h -1", b"x h 1e3",
        f"x h {2**31}".encode(), "x h ٣".encode(), b"x h\x00 1", b"\xff\xfe h 1", b"x \x1b[2J 1",
    ],
)  # fmt: skip
def test_a_claim_that_is_not_one_is_a_format_error(data: bytes) -> None:
    with pytest.raises(FormatError, match=r"^claims/3\.0 is not a corral claim"):
        Claim.parse(data, "claims/3.0")


def test_a_claim_is_checked_when_made() -> None:
    with pytest.raises(ValueError, match="element id"):
        Claim("../etc", "h", 1)
    with pytest.raises(ValueError, match="one printable word"):
        Claim("J_0", "two words", 1)


@pytest.mark.parametrize(
    ("data", "claim"),
    [
        (b"4242_0 node1 99 1", ChunkClaim(Claim("4242_0", "node1", 99), 1)),
        (b"client-cancel 250", ChunkClaim(Claim.CLIENT_CANCEL, 250)),
    ],
)
def test_a_chunk_claim_reads_back_as_written(data: bytes, claim: ChunkClaim) -> None:
    assert ChunkClaim.parse(data) == claim and claim.encode() == data


@pytest.mark.parametrize(
    "data",
    [
        b"", b"4242_0 node1 99", b"4242_0 node1 99 0", b"4242_0 node1 99 -1", b"client-cancel",
        b"client-cancel 1 2", b"4242_0 node1 99 1\n", b"4242_0 node1 99 1e3", "x h 1 ٣".encode(),
        b"4242_0 node1 99 " + b"9" * 40, b"../x h 1 1",
    ],
)  # fmt: skip
def test_a_chunk_claim_that_is_not_one_is_a_format_error(data: bytes) -> None:
    with pytest.raises(FormatError, match=r"^claims/0\.7 is not a corral chunk claim"):
        ChunkClaim.parse(data, "claims/0.7")


def test_a_chunk_claim_is_checked_when_made() -> None:
    with pytest.raises(ValueError, match="n must be a whole number >= 1"):
        ChunkClaim(Claim("J_0", "h", 1), 0)
    with pytest.raises(ValueError, match="who must be a Claim"):
        ChunkClaim("J_0 h 1", 1)  # type: ignore[arg-type]


def test_the_heartbeat_is_a_protocol_constant() -> None:
    # The client deems an element silent after three heartbeats: 15 s, the longest a dead
    # element's calls wait before the scheduler is asked about it.
    assert 3 * BEAT == 15.0


# -- the format version ---------------------------------------------------------------------------


def test_the_format_check_says_which_version_and_what_to_do() -> None:
    check_format({"format": FORMAT_VERSION, "calls": 1}, "/w/b")
    with pytest.raises(FormatVersionError) as old:
        check_format({"calls": 1}, "/w/b")
    assert str(old.value) == (
        "/w/b was written in corral's work-dir format 1 (by an older corral); this corral reads "
        "format 2. Watch it with the corral that wrote it, or remove it (nothing of it is read)"
    )
    assert (old.value.found, old.value.path) == (1, "/w/b")
    with pytest.raises(
        FormatVersionError, match=r"format 3 \(by a newer corral\); this corral reads format 2"
    ):
        check_format({"format": 3}, "/w/b")
    for bad in ({"format": "2"}, {"format": 0}, {"format": True}, [], None):
        with pytest.raises(FormatError, match=r"^/w/b/manifest.json is not a corral manifest") as caught:
            check_format(bad, "/w/b")
        assert not isinstance(caught.value, FormatVersionError)


def written_as(root: str, version: int | None) -> str:
    """A real local batch (2 calls), its manifest then rewritten as ``version`` (None: none)."""
    with corral.Executor(backend="local", directory=root) as executor:
        assert list(executor.map(abs, [-1, -2])) == [1, 2]
    (path,) = (os.path.join(root, name) for name in os.listdir(root))
    manifest = json.loads(Path(path, "manifest.json").read_text())
    assert manifest["format"] == FORMAT_VERSION  # written by the store itself
    if version is None:
        del manifest["format"]
    else:
        manifest["format"] = version
    Path(path, "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize(
    ("version", "which"), [(None, "format 1 (by an older corral)"), (3, "format 3 (by a newer")]
)
def test_every_reader_refuses_a_batch_of_another_format(
    workdir: str, version: int | None, which: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = written_as(workdir, version)
    name = os.path.basename(path)
    says = "^" + re.escape(f"{path} was written in corral's work-dir {which}")
    with pytest.raises(FormatVersionError, match=says):
        corral.attach(path)
    assert cli(["status", "--dir", workdir]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[2].startswith(name) and which in out[2]  # one line
    assert cli(["status", path]) == 1
    assert cli(["logs", path, "0"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(which in line for line in err)
    worker = [sys.executable, "-m", "corral.worker", path, "0", "0", "L9_0"]
    done = subprocess.run(
        worker, capture_output=True, text=True, timeout=60, env={**os.environ, "CORRAL_IN_JOB": ""}
    )
    assert done.returncode == 2 and which in done.stderr and done.stderr.count("\n") == 1


# -- requeues as data -----------------------------------------------------------------------------


@pytest.fixture
def sigterm_kept() -> Iterator[None]:
    """A successful requeue lets SIGTERM end the worker again: give the test's back."""
    saved = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, saved)


def recorder(tmp_path: Path) -> tuple[str, Path]:
    """A program that appends its arguments, one a line, to a file: a stand-in scheduler."""
    script, log = tmp_path / "requeue-me", tmp_path / "asked"
    script.write_text(f'#!/bin/sh\nfor a in "$@"; do echo "$a" >> {log}; done\n')
    script.chmod(0o700)
    return str(script), log


def test_each_backend_hands_its_requeue_and_restart_variable() -> None:
    backends = {
        b.name: (b.requeue, b.restart_env)
        for b in (SlurmBackend, LocalBackend, SgeBackend, SequentialBackend)
    }
    assert backends == {
        "slurm": (SLURM_REQUEUE, "SLURM_RESTART_COUNT"),
        "local": (Requeue(exit_code=99), "CORRAL_RESTART_COUNT"),
        "sge": (None, "RESTARTED"),  # SGE is asked for no time-limit warning
        "sequential": (None, None),
    }
    assert SLURM_REQUEUE.command("4242") == [
        "scontrol",
        "requeue",
        "4242",
    ]  # `scontrol requeue $SLURM_JOB_ID`
    assert SLURM_REQUEUE.settle == 120


def test_the_worker_runs_the_requeue_argv_with_its_job_id_and_no_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sigterm_kept: None
) -> None:
    program, asked = recorder(tmp_path)
    monkeypatch.setenv("MY_JOB_ID", "77; touch pwned {job_id}")
    how = Requeue(argv=(program, "requeue", "id={job_id}"), job_id_env="MY_JOB_ID", settle=0)
    assert requeue(how, "J_0") == 0
    assert asked.read_text() == "requeue\nid=77; touch pwned {job_id}\n"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the scheduler's SIGTERM ends it now
    assert requeue(Requeue(exit_code=42), "J_0") == 42


def test_a_requeue_that_fails_ends_the_element_with_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MY_JOB_ID", "77")
    refused = Requeue(
        argv=("/bin/sh", "-c", "echo no such job >&2; exit 1", "{job_id}"), job_id_env="MY_JOB_ID"
    )
    assert requeue(refused, "J_0") == 1
    missing = Requeue(argv=(str(tmp_path / "nothing-here"), "{job_id}"), job_id_env="MY_JOB_ID")
    assert requeue(missing, "J_0") == 1
    err = capsys.readouterr().err
    assert "could not requeue J_0: no such job" in err and "nothing-here" in err


def test_a_warned_element_with_calls_left_requeues_as_its_plan_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sigterm_kept: None
) -> None:
    program, asked = recorder(tmp_path)
    monkeypatch.setenv("MY_JOB_ID", "4242")
    how = Requeue(argv=(program, "{job_id}"), job_id_env="MY_JOB_ID", settle=0)
    store = BatchStore.create(str(tmp_path / "work"), "t", LocalTransport())
    store.write_batch({}, pack_function(abs), [cloudpickle.dumps(((-1,), {}))] * 2)
    plan = Plan(0, 1, Mode.STATIC, ((0, 2, 0),), chunk=2).worker_plan(WorkerOptions(requeue=how))
    store.write_submission(0, plan, "#!/bin/sh\n")
    run = run_element(store.path, 0, 0, "J_0", signals=StopSignals(warned=True))
    assert (run.ran, run.exit_code) == (0, 0)
    assert asked.read_text() == "4242\n"


def test_the_engine_writes_the_backends_requeue_into_every_plan(workdir: str) -> None:
    with corral.Executor(backend="local", directory=workdir) as executor:
        executor.submit(abs, -1).result(timeout=60)
    (name,) = os.listdir(workdir)
    plan = BatchStore(os.path.join(workdir, name), LocalTransport()).read_plan(0)
    assert (plan.requeue, plan.restart_env) == (Requeue(exit_code=99), "CORRAL_RESTART_COUNT")
