"""corral.progress and future.stop() on every backend (local, the real SLURM cluster, the real
SGE cell): a running call's progress reaches its future within a poll tick, and one running
call can be stopped without touching the calls packed into the same array element."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import corral
from corral import JobState, Request, Resources
from corral.engine.policy import PollPolicy

from .schedulers import BACKENDS, start

QUICK = PollPolicy(outcome_grace=1.0, scheduler_min=0.5, scheduler_max=2.0)


def work(x: int) -> object:
    """Call 0 trains until told to stop; the others return at once."""
    if x != 0:
        return x
    for step in range(6000):
        corral.progress(step, total=6000, loss=1.0 / (step + 1), phase="train")
        time.sleep(0.02)
    return "ran to the end"


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[corral.Cluster]:
    start(request.param)
    made = corral.Cluster(corral.get_backend(request.param), str(tmp_path / "work"), policy=QUICK)
    yield made
    made.close()


def test_progress_arrives_and_stop_ends_one_call_of_a_packed_element(engine: corral.Cluster) -> None:
    # One element runs the three calls one after another (chunksize=3): 0, then 1 and 2.
    batch = engine.submit(
        Request(fn=work, calls=[((x,), {}) for x in range(3)], resources=Resources(), chunksize=3)
    )
    first, *rest = batch.futures
    deadline = time.monotonic() + 180
    while (first.progress is None or first.progress.step < 5) and time.monotonic() < deadline:
        time.sleep(0.1)
    seen = first.progress
    assert seen is not None and seen.step >= 5 and seen.total == 6000
    assert seen.metrics["phase"] == "train" and 0 < float(seen.metrics["loss"]) <= 1  # type: ignore[arg-type]
    assert first.state is JobState.RUNNING
    assert rest[0].progress is None  # no record of its own yet
    assert first.stop()
    with pytest.raises(corral.Stopped):
        first.result(timeout=180)
    # The calls packed behind it in the same element run on: only the stopped call ended.
    assert [f.result(timeout=180) for f in rest] == [1, 2]
    assert first.job_id == rest[0].job_id == rest[1].job_id
    assert not first.stop()  # ended: nothing to stop
