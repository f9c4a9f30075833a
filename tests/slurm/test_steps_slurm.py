"""The steps backend on the real SLURM test cluster (4 nodes, 2 CPUs and 4000 MB each): a
driver submitted with ``sbatch -N4 -n8`` runs its calls as job steps of its own allocation,
eight at once, each call's result (or exception) coming back; cancelling, or a time limit,
leaves no step.

Each test submits one driver (DRIVER below, written to tmp_path) and cancels that job alone
at the end, whatever happened: nothing else in the queue is touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from .helpers import ROOT, squeue, wait_for

pytestmark = pytest.mark.slurm

STALL = "step creation temporarily disabled"

DRIVER = '''
"""Run by sbatch: corral's steps backend inside the allocation of this very job."""
import concurrent.futures
import datetime
import json
import os
import subprocess
import sys
import time

import corral


def work(call):
    start = time.time()
    time.sleep(3)
    return {"call": call, "step": os.environ.get("SLURM_STEP_ID"),
            "node": os.environ.get("SLURMD_NODENAME"), "start": start, "end": time.time()}


def boom(message):
    raise ValueError(message)


def steps():
    """The job steps of this allocation that run now (not the batch or extern step)."""
    argv = ["squeue", "-h", "-s", "-j", os.environ["SLURM_JOB_ID"], "-o", "%i"]
    found = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.split()
    return [s for s in found if s.partition(".")[2].isdigit()]


def settle(count, timeout=60):
    """Wait until ``count`` steps run (0: until none does); what runs then."""
    deadline = time.monotonic() + timeout
    while len(steps()) != count and time.monotonic() < deadline:
        time.sleep(0.2)
    return steps()


def cancel(executor, report, key):
    futures = [executor.submit(time.sleep, 300) for _ in range(8)]
    report[key + "_running"] = settle(8)
    executor.cancel_all()
    concurrent.futures.wait(futures, timeout=60)
    report[key + "_states"] = sorted({f.state.name for f in futures})
    report[key + "_left"] = settle(0)


mode, work_dir, out = sys.argv[1:4]
report = {"job": os.environ["SLURM_JOB_ID"]}
if mode == "map":
    with corral.Executor(backend="steps", directory=work_dir) as ex:
        report["preview"] = str(ex.preview(calls=16))
        report["results"] = list(ex.map(work, range(16)))
elif mode == "raise":
    with corral.Executor(backend="steps", directory=work_dir) as ex:
        try:
            ex.submit(boom, "seven").result()
        except ValueError as exc:
            report["raised"] = [type(exc).__name__, str(exc)]
        report["after"] = ex.submit(work, 0).result()
    limited = dict(time=datetime.timedelta(seconds=4), max_requeues=0, max_retries=0)
    with corral.Executor(backend="steps", directory=work_dir, **limited) as ex:
        future = ex.submit(time.sleep, 120)
        try:
            future.result()
        except corral.JobError as exc:
            report["timeout"] = [type(exc).__name__, len(steps())]
elif mode == "cancel":
    with corral.Executor(backend="steps", directory=work_dir) as ex:
        cancel(ex, report, "cancel_all")
    try:
        with corral.Executor(backend="steps", directory=work_dir) as ex:
            futures = [ex.submit(time.sleep, 300) for _ in range(4)]
            report["error_running"] = settle(4)
            raise RuntimeError("leaving the block")
    except RuntimeError:
        report["error_left"] = settle(0)
with open(out, "w") as file:
    json.dump(report, file)
'''


@pytest.fixture
def jobs() -> Iterator[list[str]]:
    """The drivers a test submits; each is cancelled at the end (and nothing else)."""
    made: list[str] = []
    yield made
    if made:
        subprocess.run(["scancel", *made], timeout=30, check=False)


def run_driver(tmp_path: Path, jobs: list[str], mode: str, *sbatch: str) -> tuple[dict[str, Any], str]:
    """Submit the driver in ``mode`` with these sbatch options, wait for its job to leave the
    queue; return its report and its stderr."""
    script = tmp_path / "driver.py"
    script.write_text(f"#!{sys.executable}\n{textwrap.dedent(DRIVER)}")
    script.chmod(0o755)
    report, work = tmp_path / "report.json", tmp_path / "work"
    argv = [
        "sbatch", "--parsable", "-N4", "-n8", "--time=5", f"--chdir={tmp_path}",
        f"--output={tmp_path / 'driver.out'}", f"--error={tmp_path / 'driver.err'}", *sbatch,
        str(script), mode, str(work), str(report),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # this checkout's corral in the job
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=True)
    job = done.stdout.strip().split(";")[0]
    jobs.append(job)
    wait_for(lambda: not squeue("-j", job, "-o", "%i").strip(), 240, f"driver job {job} to end")
    err = tmp_path / "driver.err"
    stderr = err.read_text() if err.exists() else f"(none: did job {job} ever start? {sacct_job(job)})"
    assert report.exists(), f"the driver wrote no report; its stderr:\n{stderr}"
    return json.loads(report.read_text()), stderr


def element_logs(tmp_path: Path) -> str:
    """Everything the elements (srun and the steps) wrote to their logs."""
    return "".join(p.read_text(errors="replace") for p in (tmp_path / "work").rglob("*.err"))


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most of these (start, end) spans that overlap at one moment."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = best = 0
    for _, change in events:
        running += change
        best = max(best, running)
    return best


def sacct_job(job: str) -> str:
    argv = ["sacct", "-j", job, "--format=JobID,State,Start,End,NodeList", "-P", "-n"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout


def sacct_steps(job: str) -> dict[str, tuple[float, float]]:
    """The numbered steps of ``job`` that ended, by step number: (start, end) as sacct says
    (whole seconds)."""
    found = {}
    for line in sacct_job(job).splitlines():
        step, _, start, end, _ = line.split("|")
        _, dot, number = step.partition(".")
        if dot and number.isdigit() and "T" in end:
            found[number] = (
                datetime.fromisoformat(start).timestamp(),
                datetime.fromisoformat(end).timestamp(),
            )
    return found


def test_calls_run_as_steps_of_the_driver_allocation_eight_at_once(tmp_path: Path, jobs: list[str]) -> None:
    report, stderr = run_driver(tmp_path, jobs, "map", "--mem=3000")
    results = report["results"]
    assert [r["call"] for r in results] == list(range(16))
    assert "srun --ntasks=1 --nodes=1 --cpus-per-task=1 --mem=1500 --exact" in report["preview"]
    assert {r["node"] for r in results} == {"n1", "n2", "n3", "n4"}
    assert all(r["step"] is not None and r["step"].isdigit() for r in results)
    spans: dict[str, tuple[float, float]] = {}
    for r in results:  # an element is one step and may run several calls
        start, end = spans.get(r["step"], (r["start"], r["end"]))
        spans[r["step"]] = (min(start, r["start"]), max(end, r["end"]))
    overlap = most_at_once(list(spans.values()))
    wait_for(lambda: set(sacct_steps(report["job"])) >= set(spans), 60, "sacct to know every step")
    accounted = sacct_steps(report["job"])
    # for the record (pytest -s); sacct counts whole seconds
    print(f"{len(spans)} steps, at most {overlap} at once; sacct: {most_at_once(list(accounted.values()))}")
    assert overlap >= 7, spans
    assert most_at_once(list(accounted.values())) >= 7, sacct_job(report["job"])
    assert STALL not in stderr and STALL not in element_logs(tmp_path)


def test_memory_per_cpu_allocation_shares_without_stalling(tmp_path: Path, jobs: list[str]) -> None:
    report, stderr = run_driver(tmp_path, jobs, "map", "--mem-per-cpu=1000")
    assert [r["call"] for r in report["results"]] == list(range(16))
    assert "--mem=1000 --exact" in report["preview"]
    assert STALL not in stderr and STALL not in element_logs(tmp_path)


def test_a_call_that_raises_comes_back_as_its_own_exception_and_time_limits_hold(
    tmp_path: Path, jobs: list[str]
) -> None:
    report, _ = run_driver(tmp_path, jobs, "raise", "--mem=3000")
    assert report["raised"] == ["ValueError", "seven"]
    assert report["after"]["call"] == 0 and report["after"]["step"] is not None
    assert report["timeout"] == ["JobTimeoutError", 0]  # the time limit ended the step


def test_cancelling_leaves_no_step_running(tmp_path: Path, jobs: list[str]) -> None:
    report, _ = run_driver(tmp_path, jobs, "cancel", "--mem=3000")
    assert len(report["cancel_all_running"]) == 8
    assert report["cancel_all_states"] == ["CANCELLED"]
    assert report["cancel_all_left"] == []
    assert len(report["error_running"]) == 4
    assert report["error_left"] == []
