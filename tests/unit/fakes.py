"""A transport that plays a small SLURM for fast engine tests: sbatch runs the array's
elements in-process through the real worker (unless told to lose them), squeue and sacct
answer from that record in SLURM's own output formats. The real cluster is tested in
tests/slurm/; this fake only makes the engine's edge cases quick to reach."""

from __future__ import annotations

import importlib
import os
import re
import sys
import time
import types
from collections.abc import Sequence
from pathlib import Path

import pytest

from corral.store.batch import BatchStore, Outcome
from corral.store.protocol import ChunkClaim, Claim, Mode
from corral.store.replay import CallEvent, Ran, Replay, each_call
from corral.store.streams import Claim as ClaimRecord
from corral.store.streams import Item, Record, Result, Start, StreamReader, StreamWriter
from corral.transports.base import CommandResult
from corral.transports.local import LocalTransport
from corral.worker.chunks import take_chunk
from corral.worker.run import run_element

DOWN = "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)\n"


class FakeSlurm(LocalTransport):
    """Local files, scripted scheduler commands. ``calls`` records every argv."""

    def __init__(
        self,
        *,
        run_jobs: bool = True,
        fail_sbatch_after: int | None = None,
        forget: bool = False,
        node_fail: int = 0,
        down_for: int = 0,
    ) -> None:
        self.calls: list[list[str]] = []
        self.run_jobs = run_jobs
        self.fail_sbatch_after = fail_sbatch_after
        self.forget = forget  # the scheduler forgets jobs at once: neither squeue nor sacct knows them
        self.jobs: dict[str, list[str]] = {}  # job id -> state per element
        self.scripts: dict[str, str] = {}  # job id -> the script it runs
        self.max_queued = 0
        self.node_fail = node_fail  # this many elements take a call, then their node dies
        self.down_for = down_for  # this many sbatch commands find the controller down
        self._next = 100

    def names(self) -> list[str]:
        return [argv[0] for argv in self.calls]

    def run(self, argv: Sequence[str], *, timeout: float) -> CommandResult:
        argv = list(argv)
        self.calls.append(argv)
        handler = getattr(self, "_" + argv[0])
        code, out, err = handler(argv)
        return CommandResult(tuple(argv), code, out, err)

    def _sbatch(self, argv: list[str]) -> tuple[int, str, str]:
        submitted = sum(1 for a in self.calls if a[0] == "sbatch")
        if self.fail_sbatch_after is not None and submitted > self.fail_sbatch_after:
            return 1, "", "sbatch: error: Batch job submission failed: Invalid partition name specified\n"
        if self.down_for > 0:
            self.down_for -= 1
            return 1, "", DOWN
        script = argv[-1]
        text = open(script).read()
        elements = int(re.search(r"--array=0-(\d+)", text).group(1)) + 1  # type: ignore[union-attr]
        job = str(self._next)
        self._next += 1
        self.jobs[job] = ["PENDING"] * elements
        self.scripts[job] = script
        self.max_queued = max(self.max_queued, self.queued())
        if self.run_jobs:
            batch_dir = os.path.dirname(os.path.dirname(script))
            sub = int(os.path.basename(script).split(".")[0])
            for index in range(elements):
                if self.node_fail > 0:
                    self.node_fail -= 1
                    self._die(batch_dir, sub, index, f"{job}_{index}")
                    self.jobs[job][index] = "NODE_FAIL"
                    continue
                run_element(batch_dir, sub, index, f"{job}_{index}")
                self.jobs[job][index] = "COMPLETED"
        return 0, f"{job}\n", ""

    @staticmethod
    def _die(batch_dir: str, sub: int, index: int, element: str) -> None:
        """Take the element's first free call (a chunk claim of one, written to its stream
        after its Start), then die with the node: no Result, no End."""
        store = BatchStore(batch_dir, LocalTransport())
        plan = store.read_plan(sub)
        who, size = Claim(element, "n1", 1), len(plan.tasks)
        if plan.mode is Mode.STATIC:
            pos = index * plan.chunk
            if pos >= size or not store.claim_chunk(sub, pos, ChunkClaim(who, min(plan.chunk, size - pos))):
                return
            taken: tuple[int, int] | None = (pos, min(plan.chunk, size - pos))
        else:
            taken = take_chunk(store, sub, size, 0, 1, who)
        if taken is None:
            return
        with StreamWriter(store.stream_path(element)) as stream:
            stream.write(Start(element=element, host="n1", pid=1, run=0, out=0, err=0, t=time.time()))
            stream.write(ClaimRecord(sub=sub, pos=taken[0], n=taken[1], out=0, err=0, t=time.time()))

    def queued(self) -> int:
        return sum(s in ("PENDING", "RUNNING") for states in self.jobs.values() for s in states)

    def _lines(self, ids: str, form: str) -> str:
        lines = []
        for job in ids.split(","):
            for index, state in enumerate(self.jobs.get(job, [])):
                lines.append(form.format(id=f"{job}_{index}", state=state))
        return "".join(lines)

    def _squeue(self, argv: list[str]) -> tuple[int, str, str]:
        if "--me" in argv and "%F|%o" in argv:  # the user's jobs and their scripts
            return 0, "".join(f"{job}|{script}\n" for job, script in self.scripts.items()), ""
        if "--me" in argv:
            return 0, "\n".join("x" for _ in range(self.queued())), ""
        ids = argv[argv.index("-j") + 1]
        if self.forget or not any(j in self.jobs for j in ids.split(",")):
            return 1, "", "slurm_load_jobs error: Invalid job id specified\n"
        return 0, self._lines(ids, "{id}|{state}|n1|None\n"), ""

    def _sacct(self, argv: list[str]) -> tuple[int, str, str]:
        ids = argv[argv.index("-j") + 1]
        return 0, "" if self.forget else self._lines(ids, "{id}|{state}|0:0|n1\n"), ""

    def _scancel(self, argv: list[str]) -> tuple[int, str, str]:
        pending_only = "--state=PENDING" in argv
        for job in (a for a in argv[1:] if not a.startswith("-")):
            states = self.jobs.get(job, [])
            for i, state in enumerate(states):
                if state == "PENDING" or (state == "RUNNING" and not pending_only):
                    states[i] = "CANCELLED"
        return 0, "", ""

    def _scontrol(self, argv: list[str]) -> tuple[int, str, str]:
        return 0, "MaxArraySize            = 1001\nClusterName             = fake\n", ""

    def _sinfo(self, argv: list[str]) -> tuple[int, str, str]:
        return 0, "debug*|0/8/0/8\n", ""

    def _sacctmgr(self, argv: list[str]) -> tuple[int, str, str]:
        return 0, "\n", ""


def stand_in_python(folder: Path) -> Path:
    """An executable that job scripts can run as their python: it prints its arguments on
    one line, then what it reads on stdin (so the worker's argv and input can be checked)."""
    python = folder / "python"
    python.write_text('#!/bin/bash\necho "$*"\ncat\n')
    python.chmod(0o755)
    return python


def client_only_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A module ``helpers_mod`` (with ``double``) that this process imported from a folder
    the nodes do not have on their path: its functions travel by reference, and a node
    fails to import them, as when a module exists only on the user's laptop."""
    mods = tmp_path / "client-only"
    mods.mkdir()
    (mods / "helpers_mod.py").write_text("def double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(mods))
    monkeypatch.delitem(sys.modules, "helpers_mod", raising=False)
    module = importlib.import_module("helpers_mod")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(mods)])  # the nodes' view
    return module


# -- reading a batch as the client does -----------------------------------------------------------


def replayed(store: BatchStore) -> tuple[Replay, list[CallEvent]]:
    """Every stream of the batch read whole through the client's reader, with the facts it
    gave (in stream order, streams by name)."""
    n_calls = os.path.getsize(store.calls_index_path()) // 8 - 1
    plans = {sub: list(store.read_plan(sub).tasks) for sub in store.submissions()}
    replay = Replay(n_calls, lambda sub: plans.get(sub, []))
    events = [
        event
        for name, data in sorted(store.scan_streams({}).items())
        for event in each_call(replay.feed(name, data, 0.0))
    ]
    return replay, events


def stream_records(store: BatchStore, element: str) -> list[Item]:
    """Everything in ``element``'s stream, in order (a torn tail as a Corrupt)."""
    reader = StreamReader()
    return [item for _, item in reader.feed(store.read_stream(element)) + reader.finish()]


def outcomes(store: BatchStore) -> dict[tuple[int, int], Outcome]:
    """The outcome of every (call, attempt) whose Result the streams hold; a large one's
    from its own file (its payload stays bytes)."""
    found = {}
    for event in replayed(store)[1]:
        if isinstance(event, Ran):
            result = event.result
            found[(event.call, event.attempt)] = (
                store.read_large_result(event.call, event.attempt)
                if result.in_file
                else Outcome(
                    result.ok,
                    result.payload,
                    type_name=result.type_name,
                    message=result.message,
                    traceback=result.traceback,
                    element=event.element,
                    host=result.host,
                    started=result.started,
                    finished=result.finished,
                )  # fmt: skip
            )
    return found


def call_output(store: BatchStore, call: int, attempt: int, stream: str) -> str:
    """What one attempt printed on ``stream`` ("out" or "err"): its range of its element's
    file, as the client finds it."""
    where = replayed(store)[0].output(call, attempt)
    assert where is not None, f"no output of call {call}.{attempt}"
    element, out, err = where
    start, end = out if stream == "out" else err
    return store.read_output(element, stream, start, end)


# -- writing a stream by hand, as the worker writes it ---------------------------------------------


def start_record(element: str, host: str = "node1", pid: int = 99, run: int = 0) -> Start:
    """The Start of run ``run`` of ``element`` on ``host`` (nothing printed yet)."""
    return Start(element=element, host=host, pid=pid, run=run, out=0, err=0, t=time.time())


def claim_record(sub: int, pos: int, n: int = 1) -> ClaimRecord:
    """The element took positions ``pos..pos+n-1`` of submission ``sub``'s task list."""
    return ClaimRecord(sub=sub, pos=pos, n=n, out=0, err=0, t=time.time())


def result_record(
    call: int,
    attempt: int,
    payload: bytes = b"",
    *,
    ok: bool = True,
    in_file: bool = False,
    out: int = 0,
    err: int = 0,
    **data: str,
) -> Result:
    """A Result as the worker writes it: ``out`` and ``err`` are the sizes of the element's
    output files when the call ended; ``data``: type_name, message, traceback, host."""
    now = time.time()
    fields = {"type_name": "", "message": "", "traceback": "", "host": "node1", **data}
    return Result(
        call=call, attempt=attempt, ok=ok, started=now, finished=now, out=out, err=err, in_file=in_file,
        payload=payload, **fields,
    )  # fmt: skip


def write_stream(store: BatchStore, element: str, *records: Record) -> None:
    """Append ``records`` to ``element``'s stream through the worker's writer."""
    with StreamWriter(store.stream_path(element)) as stream:
        for record in records:
            stream.write(record)
