"""The job's environment on the real SLURM test cluster: setup, env, python, post, srun
options and a launcher, seen from inside the call and in sacct; per_task over two nodes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import corral

pytestmark = pytest.mark.usefixtures("fresh_queue")


def inside() -> dict[str, str | None]:
    names = ("STAGE", "FROM_SETUP", "VIA_WRAPPER", "LAUNCHED", "SLURM_STEP_ID", "SLURM_DISTRIBUTION")
    names += ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")
    return {name: os.environ.get(name) for name in names}


def rank() -> tuple[int, int, int, str]:
    info = corral.task_info()
    return info.rank, info.size, info.local_rank, info.node


def test_setup_env_python_post_srun_and_launcher_are_applied(make_executor, tmp_path: Path) -> None:
    wrapper = tmp_path / "python"  # another interpreter path on the nodes: the same Python, marked
    wrapper.write_text(f'#!/bin/sh\nexport VIA_WRAPPER=1\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    post = tmp_path / "post-ran"
    ex = make_executor(
        "slurm", setup=["export FROM_SETUP=yes"], env={"STAGE": "cluster"}, python=str(wrapper),
        post=[f"echo $SLURM_JOB_ID >> {post}"], srun={"distribution": "cyclic"},
        launcher=["env", "LAUNCHED=1"],
    )  # fmt: skip
    seen = ex.submit(inside).result(timeout=120)
    assert seen["STAGE"] == "cluster" and seen["FROM_SETUP"] == "yes" and seen["VIA_WRAPPER"] == "1"
    assert seen["LAUNCHED"] == "1" and seen["SLURM_STEP_ID"] == "0"  # the worker ran as step 0
    assert seen["SLURM_DISTRIBUTION"] == "cyclic"
    job = seen["SLURM_JOB_ID"]
    assert job is not None
    argv = ["sacct", "-n", "-P", "-j", job, "-o", "JobID,JobName"]
    steps = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    # step 0 runs the launcher; sacct names the element by its own id, or as the array's
    # element when that id is the array's (element 0's is)
    element = f"{seen['SLURM_ARRAY_JOB_ID']}_{seen['SLURM_ARRAY_TASK_ID']}"
    assert {f"{job}.0|env", f"{element}.0|env"} & set(steps.splitlines()), steps
    deadline = time.monotonic() + 60  # the post lines run once the worker has ended
    while not post.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert post.read_text().split() == [job]


def test_per_task_on_two_nodes_runs_every_rank(make_executor) -> None:
    ex = make_executor("slurm", nodes=2, tasks=4, per_task="all")
    ranks = ex.submit(rank).result(timeout=180)
    assert [r[:2] for r in ranks] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assert len({r[3] for r in ranks}) == 2  # two nodes
    assert sorted(r[2] for r in ranks) == [0, 0, 1, 1]  # two tasks on each


def test_a_failed_rank_stops_the_others_and_names_itself(make_executor) -> None:
    ex = make_executor("slurm", nodes=2, tasks=2, per_task=True, max_retries=0)
    with pytest.raises(ZeroDivisionError) as caught:
        ex.submit(divide_by_rank).result(timeout=180)
    assert "rank 0 of 2" in str(caught.value.__cause__)


def divide_by_rank() -> float:
    info = corral.task_info()
    if info.rank == 1:
        time.sleep(600)  # waits as for a collective: srun --kill-on-bad-exit ends it
    return 1 / info.rank
