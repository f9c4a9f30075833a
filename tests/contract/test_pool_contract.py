"""corral.Pool against multiprocessing.Pool, on every backend (local, the real SLURM cluster and
the real SGE cell, which the fixtures start): the same calls give the same results, the same
order and the same errors, and ``processes`` bounds the calls running at once."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import corral
from corral.engine.policy import PollPolicy

from .schedulers import BACKENDS, start

QUICK = PollPolicy(outcome_grace=1.0, scheduler_min=0.5, scheduler_max=2.0)


def square(x: int) -> int:
    return x * x


def power(x: int, y: int) -> int:
    return x**y


def fails_at_37(x: int) -> int:
    if x == 37:
        raise KeyError(f"no value for {x}")
    return x


def spans(path: str, x: int) -> int:
    """Record when this call ran (start and end), to count calls running at once."""
    start = time.time()
    time.sleep(0.5)
    with open(os.path.join(path, f"{x}"), "w") as out:
        out.write(f"{start} {time.time()}")
    return x


@pytest.fixture(scope="module")
def reference() -> Iterator[multiprocessing.pool.Pool]:
    with multiprocessing.Pool(2) as pool:
        yield pool


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    start(request.param)
    return str(request.param)


@pytest.fixture
def pool(backend_name: str, tmp_path: Path) -> Iterator[corral.Pool]:
    engine = corral.Cluster(corral.get_backend(backend_name), str(tmp_path / "work"), policy=QUICK)
    made = corral.Pool(cluster=engine)
    yield made
    made.terminate()
    engine.close()


def test_map_equals_multiprocessing(pool: corral.Pool, reference: multiprocessing.pool.Pool) -> None:
    assert pool.map(square, range(500)) == reference.map(square, range(500))


def test_starmap_equals_multiprocessing(pool: corral.Pool, reference: multiprocessing.pool.Pool) -> None:
    pairs = [(x, y) for x in range(10) for y in range(4)]
    assert pool.starmap(power, pairs) == reference.starmap(power, pairs)


def test_imap_in_order_and_imap_unordered_as_a_set(
    pool: corral.Pool, reference: multiprocessing.pool.Pool
) -> None:
    assert list(pool.imap(square, range(60))) == list(reference.imap(square, range(60)))
    assert sorted(pool.imap_unordered(square, range(60))) == sorted(
        reference.imap_unordered(square, range(60))
    )


def test_apply_and_apply_async(pool: corral.Pool, reference: multiprocessing.pool.Pool) -> None:
    results = [pool.apply_async(power, (x, 3)) for x in range(5)]
    assert [r.get(timeout=120) for r in results] == [reference.apply(power, (x, 3)) for x in range(5)]
    assert all(r.ready() and r.successful() for r in results)
    assert pool.apply(power, (2,), {"y": 10}) == 1024


def test_a_failing_call_raises_its_own_error_naming_its_index(pool: corral.Pool) -> None:
    with pytest.raises(KeyError, match="no value for 37") as caught:
        pool.map(fails_at_37, range(100))
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "call 37 of batch" in notes and "its files are in" in notes
    work_dir = notes.split("its files are in ")[1].rstrip(")")
    assert os.path.isdir(work_dir)  # a failed map keeps its work dir


def test_processes_bounds_the_calls_running_at_once(backend_name: str, tmp_path: Path) -> None:
    engine = corral.Cluster(corral.get_backend(backend_name), str(tmp_path / "work"), policy=QUICK)
    marks = tmp_path / "marks"
    marks.mkdir()
    with corral.Pool(3, cluster=engine) as pool:
        assert pool.map(spans, []) == []
        # two maps at once: the pool's limit holds across them
        a = pool.starmap_async(spans, [(str(marks), x) for x in range(12)])
        b = pool.starmap_async(spans, [(str(marks), x) for x in range(12, 24)])
        assert a.get(timeout=300) == list(range(12)) and b.get(timeout=300) == list(range(12, 24))
    engine.close()
    events = []
    for path in marks.iterdir():
        start, end = map(float, path.read_text().split())
        events += [(start, 1), (end, -1)]
    running = peak = 0
    for _, change in sorted(events):
        running += change
        peak = max(peak, running)
    assert len(events) == 48 and peak <= 3, peak
