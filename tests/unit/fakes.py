"""A transport that plays a small SLURM for fast engine tests: sbatch runs the array's
elements in-process through the real worker (unless told to lose them), squeue and sacct
answer from that record in SLURM's own output formats. The real cluster is tested in
tests/slurm/; this fake only makes the engine's edge cases quick to reach."""

from __future__ import annotations

import importlib
import os
import re
import sys
import types
from collections.abc import Sequence
from pathlib import Path

import pytest

from corral.store.batch import BatchStore
from corral.store.protocol import Claim
from corral.transports.base import CommandResult
from corral.transports.local import LocalTransport
from corral.worker.run import element_order, run_element

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
        """Take the element's first free call, then die with the node (no outcome)."""
        store = BatchStore(batch_dir, LocalTransport())
        for call, attempt in element_order(store.read_plan(sub), index):
            if store.claim(call, attempt, Claim(element, "n1", 1)):
                return

    def queued(self) -> int:
        return sum(s in ("PENDING", "RUNNING") for states in self.jobs.values() for s in states)

    def _lines(self, ids: str, form: str) -> str:
        lines = []
        for job in ids.split(","):
            for index, state in enumerate(self.jobs.get(job, [])):
                lines.append(form.format(id=f"{job}_{index}", state=state))
        return "".join(lines)

    def _squeue(self, argv: list[str]) -> tuple[int, str, str]:
        if "-u" in argv:
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
