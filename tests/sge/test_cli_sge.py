"""``corral cancel`` and ``corral doctor`` on the real SGE test cell (one host, all.q with 4
slots): the batch's own backend is asked, here through ``qdel``, ``qstat`` and ``qconf``."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest


def nap(x: int) -> int:
    time.sleep(300)
    return x


def corral(*argv: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "corral", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)


def queued(job_ids: list[str]) -> set[str]:
    out = subprocess.run(["qstat", "-u", "*"], capture_output=True, text=True, timeout=30).stdout
    listed = {line.split()[0] for line in out.splitlines()[2:] if line.split()}
    return listed & set(job_ids)


def wait_until(condition, what: str, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what}")
        time.sleep(0.5)


def test_cancel_qdels_that_batch_only(make_executor, workdir: str) -> None:  # type: ignore[no-untyped-def]
    from corral.errors import JobCancelledError

    ex = make_executor("sge", max_retries=0)
    doomed = ex.map(nap, range(2))
    ex.map(nap, range(2))  # the batch that must run on
    doomed_batch, kept_batch = ex._batches[-2], ex._batches[-1]
    wait_until(lambda: all(s.job_id for b in (doomed_batch, kept_batch) for s in b.subs), "the job ids")
    doomed_jobs = [s.job_id for s in doomed_batch.subs]
    kept_jobs = [s.job_id for s in kept_batch.subs]
    out = corral("cancel", doomed_batch.store.name, "--dir", workdir)
    assert out.returncode == 0, out.stderr
    assert f"jobs {', '.join(doomed_jobs)} cancelled through sge" in out.stdout
    wait_until(lambda: not queued(doomed_jobs), "the cancelled batch's jobs to leave the queue")
    assert queued(kept_jobs) == set(kept_jobs)
    with pytest.raises(JobCancelledError):
        list(doomed)
    status = json.loads(corral("status", doomed_batch.store.name, "--json", "--dir", workdir).stdout)
    assert status["counts"]["cancelled"] == 2


def test_doctor_checks_the_sge_cell(workdir: str) -> None:
    out = corral("doctor", "--backend", "sge", "--json", "--dir", workdir)
    assert out.returncode == 0, out.stdout + out.stderr
    checks = {c["check"]: c for c in json.loads(out.stdout)["checks"]}
    assert checks["scheduler"]["details"]["version"] == "8.1.9"  # `qstat -help`'s first line: SGE 8.1.9
    assert "all.q" in checks["limits"]["details"]["partitions"]
    assert checks["test job"]["status"] == "OK", checks["test job"]
