"""Pool's multiprocessing semantics on the local backend: lifecycle, callbacks, time-outs,
the initializer, and validation before anything runs."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import corral

from ..conftest import FAST


def square(x: int) -> int:
    return x * x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def needs_init(x: int) -> tuple[int, str, int]:
    return x, os.environ.get("POOL_GREETING", ""), os.getpid()


def set_greeting(greeting: str) -> None:
    os.environ["POOL_GREETING"] = greeting
    with open(os.environ["POOL_INIT_LOG"], "a") as log:
        log.write(f"{os.getpid()}\n")


@pytest.fixture
def pool(workdir: str) -> Iterator[corral.Pool]:
    made = corral.Pool(2, cluster=corral.Cluster(corral.get_backend("local"), workdir, policy=FAST))
    yield made
    made.terminate()
    made.cluster.close()


def test_close_then_join_waits_for_everything(pool: corral.Pool) -> None:
    result = pool.map_async(nap, [0.3] * 4)
    with pytest.raises(ValueError, match="Pool is still running"):
        pool.join()
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(square, [1])
    pool.join()
    assert result.ready() and result.get(timeout=0) == [0.3] * 4


def test_callbacks_get_the_list_or_the_first_error(pool: corral.Pool) -> None:
    got: list[object] = []
    done = threading.Event()
    pool.map_async(square, range(5), callback=lambda v: (got.append(v), done.set()))
    assert done.wait(60) and got == [[0, 1, 4, 9, 16]]
    failed = threading.Event()
    result = pool.apply_async(divmod, (1, 0), error_callback=lambda e: (got.append(e), failed.set()))
    assert failed.wait(60) and isinstance(got[-1], ZeroDivisionError)
    assert result.ready() and not result.successful()


def test_get_and_next_time_out_as_in_multiprocessing(pool: corral.Pool) -> None:
    result = pool.apply_async(nap, (5,))
    with pytest.raises(ValueError, match="not ready"):
        result.successful()
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(timeout=0.1)
    iterator = pool.imap(nap, [5])
    with pytest.raises(multiprocessing.TimeoutError):
        iterator.next(timeout=0.1)
    unordered = pool.imap_unordered(nap, [5])
    with pytest.raises(multiprocessing.TimeoutError):
        unordered.next(timeout=0.1)


def test_the_initializer_runs_once_per_worker_process(workdir: str, tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "init.log"
    monkeypatch.setenv("POOL_INIT_LOG", str(log))
    engine = corral.Cluster(corral.get_backend("local"), workdir, policy=FAST)
    with corral.Pool(2, initializer=set_greeting, initargs=("hello",), cluster=engine) as pool:
        results = pool.map(needs_init, range(20))
    engine.close()
    assert [r[:2] for r in results] == [(x, "hello") for x in range(20)]
    workers = {r[2] for r in results}
    assert sorted(map(int, log.read_text().split())) == sorted(workers)  # once in each


def test_terminate_cancels_what_has_not_run(pool: corral.Pool) -> None:
    result = pool.map_async(nap, [30] * 4)
    time.sleep(0.5)
    started = time.monotonic()
    pool.terminate()
    pool.join()
    assert time.monotonic() - started < 10
    assert result.ready() and not result.successful()
    with pytest.raises((corral.JobCancelledError, Exception)):
        result.get(timeout=0)


def test_bad_arguments_fail_before_anything_runs(workdir: str) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        corral.Pool(0, backend="local")
    with pytest.raises(corral.ResourceError, match="memroy"):
        corral.Pool(backend="local", memroy="4G")
    with pytest.raises(corral.CorralError, match="max_retries"):
        corral.Pool(backend="local", max_retries=-1)
    with pytest.raises(TypeError, match="initializer"):
        corral.Pool(backend="local", initializer="not callable")  # type: ignore[arg-type]
    with corral.Pool(backend="local", directory=workdir) as pool, pytest.raises(corral.SerializationError):
        pool.map(square, [threading.Lock()])
    assert not os.path.exists(workdir)  # pickling fails before the work dir is made


def test_a_callback_may_use_the_pool_itself(pool: corral.Pool) -> None:
    follow_ups: list[list[int]] = []
    first = pool.map_async(
        square, range(3), callback=lambda values: follow_ups.append(pool.map(square, values))
    )
    first.get(timeout=60)  # returns once the callback, which waited on a second map, is done
    assert follow_ups == [[0, 1, 16]]
