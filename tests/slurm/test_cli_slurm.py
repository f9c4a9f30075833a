"""`corral status` and `corral logs` on batches that ran on the real SLURM test cluster."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.usefixtures("fresh_queue")


def square(x: int) -> int:
    return x * x


def shaky(x: int) -> int:
    print(f"working on {x}")
    if x == 2:
        raise ValueError(f"cannot do {x}")
    return x


def corral(*argv: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "corral", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_status_and_logs_show_a_finished_and_a_failed_batch(make_executor, workdir: str) -> None:
    ex = make_executor("slurm")
    assert list(ex.map(square, range(5))) == [0, 1, 4, 9, 16]
    with pytest.raises(ValueError, match="cannot do 2"):
        list(ex.map(shaky, range(4)))
    finished = next(n for n in os.listdir(workdir) if n.startswith("square-"))
    failed = next(n for n in os.listdir(workdir) if n.startswith("shaky-"))

    listing = corral("status", "--dir", workdir)
    assert listing.returncode == 0, listing.stderr
    lines = {line.split()[0]: line for line in listing.stdout.splitlines() if line.strip()}
    assert lines[finished].endswith("5 completed · 0 failed · 0 running · 0 pending")
    assert lines[failed].endswith("3 completed · 1 failed · 0 running · 0 pending")
    assert "slurm" in lines[finished]

    one = corral("status", failed, "--dir", workdir)
    assert one.returncode == 0, one.stderr
    assert "calls     4: 3 completed · 1 failed · 0 running · 0 pending" in one.stdout
    assert "ValueError" in one.stdout and "cannot do 2" in one.stdout
    job = ex._batches[-1].subs[0].job_id
    assert job in one.stdout  # the job id sacct knows it by

    logs = corral("logs", failed, "2", "--dir", workdir)
    assert logs.returncode == 0, logs.stderr
    assert "working on 2" in logs.stdout
    assert 'raise ValueError(f"cannot do {x}")' in logs.stdout
    assert corral("logs", finished, "3", "--out", "--dir", workdir).stdout == ""
    assert corral("logs", failed, "3", "--out", "--dir", workdir).stdout == "working on 3\n"
