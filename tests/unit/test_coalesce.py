"""Coalesced submits (corral.engine.coalesce): a loop of ``submit`` or ``apply_async`` is one
batch, ``with executor.batch():`` is exactly one, and each pending call still behaves as a
future of its own (a bad argument fails at its line, cancel withdraws it, result() sends it)."""

from __future__ import annotations

import concurrent.futures
import os
import threading

import pytest

import corral
import corral.engine.budget
from corral import JobState


def square(x: int) -> int:
    return x * x


def batches(workdir: str) -> list[str]:
    return sorted(os.listdir(workdir)) if os.path.isdir(workdir) else []


def test_a_loop_of_submits_is_one_batch_and_one_charge(make_executor, workdir: str) -> None:
    corral.engine.budget.reset()
    ex = make_executor("local")
    futures = [ex.submit(square, x) for x in range(1000)]
    assert [f.result(timeout=120) for f in futures] == [x * x for x in range(1000)]
    assert len(batches(workdir)) <= 3  # a pause of 5 ms inside the loop may cut it in two
    assert corral.engine.budget.spent() == len(batches(workdir))


def test_as_completed_sends_a_pending_burst_by_itself(make_executor, workdir: str) -> None:
    ex = make_executor("local")
    futures = [ex.submit(square, x) for x in range(50)]  # no result() asked: the pause sends it
    done = {f.result() for f in concurrent.futures.as_completed(futures, timeout=60)}
    assert done == {x * x for x in range(50)}


def test_a_batch_block_is_exactly_one_batch(make_executor, workdir: str) -> None:
    ex = make_executor("local")
    with ex.batch():
        futures = [ex.submit(square, x) for x in range(300)]
        threading.Event().wait(0.05)  # ten pauses' worth: the block still holds them
        assert batches(workdir) == []
        assert all(f.job_id is None and f.state is JobState.PENDING for f in futures)
        assert "gathering" in repr(futures[0]) and batches(workdir) == []  # looking submits nothing
    assert len(batches(workdir)) == 1
    assert [f.result(timeout=60) for f in futures] == [x * x for x in range(300)]
    assert len({f.batch for f in futures}) == 1 and [f.call for f in futures] == list(range(300))


def test_a_batch_block_that_raises_submits_nothing(make_executor, workdir: str) -> None:
    ex = make_executor("local")
    with pytest.raises(KeyError), ex.batch():
        futures = [ex.submit(square, x) for x in range(5)]
        raise KeyError("oops")
    assert all(f.cancelled() for f in futures)
    assert batches(workdir) == []
    with ex.batch(), pytest.raises(RuntimeError, match="already open"), ex.batch():
        pass


def test_a_bad_argument_fails_at_its_own_submit(make_executor, workdir: str) -> None:
    ex = make_executor("local")
    good = ex.submit(square, 2)
    with pytest.raises(corral.SerializationError, match="call"):
        ex.submit(square, threading.Lock())
    with pytest.raises(corral.SerializationError, match="cannot pickle the function"):
        ex.submit(lambda lock=threading.Lock(): lock)  # noqa: B008 - a function that cannot travel
    assert good.result(timeout=60) == 4


def test_cancel_withdraws_a_pending_call(make_executor, workdir: str) -> None:
    ex = make_executor("local")
    with ex.batch():
        kept = ex.submit(square, 3)
        dropped = ex.submit(square, 4)
        assert dropped.cancel() and dropped.cancelled() and dropped.state is JobState.CANCELLED
    assert kept.result(timeout=60) == 9
    assert kept.call == 0  # the batch holds the one call left
    with pytest.raises(concurrent.futures.CancelledError):
        dropped.result()


def test_shutdown_sends_what_is_gathering(make_executor, workdir: str) -> None:
    ex = make_executor("local")
    with ex.batch():
        futures = [ex.submit(square, x) for x in range(3)]
        ex.shutdown(wait=True)  # the block has not ended: shutdown sends its calls
        assert [f.result(timeout=0) for f in futures] == [0, 1, 4]


def test_submits_of_two_functions_make_one_batch_each(make_executor, workdir: str) -> None:
    ex = make_executor("local")
    with ex.batch():
        squares = [ex.submit(square, x) for x in range(4)]
        negatives = [ex.submit(abs, -x) for x in range(4)]
    assert [f.result(timeout=60) for f in squares + negatives] == [0, 1, 4, 9, 0, 1, 2, 3]
    assert len(batches(workdir)) == 2


def test_a_failed_submission_fails_each_pending_future(make_executor, workdir: str) -> None:
    corral.engine.budget.reset()
    corral.set_defaults(submit_budget=1)
    ex = corral.Executor(cluster=make_executor("local").cluster)
    ex.map(square, [1])  # the one submission the budget allows
    with ex.batch():
        futures = [ex.submit(square, x) for x in range(3)]
    for future in futures:
        with pytest.raises(corral.SubmissionBudgetError, match="submit_budget=1"):
            future.result(timeout=10)


def test_a_loop_of_apply_async_is_one_batch(workdir: str) -> None:
    with corral.Pool(2, backend="local", directory=workdir) as pool:
        results = [pool.apply_async(square, (x,)) for x in range(200)]
        assert [r.get(timeout=60) for r in results] == [x * x for x in range(200)]
    assert len(batches(workdir)) <= 3


class SlowToPickle:
    """An argument whose pickling takes ten times a burst's pause (as 100 MB of data does)."""

    def __reduce__(self) -> tuple[type, tuple[()]]:
        import time

        time.sleep(0.05)
        return (SlowToPickle, ())


def pickled(value: object) -> str:
    return type(value).__name__


def test_an_argument_slower_to_pickle_than_the_pause_still_joins_a_batch(make_executor) -> None:
    """It is pickled before it joins: a batch made for it is not submitted empty meanwhile,
    again and again (the submit never returned)."""
    ex = make_executor("local")
    done: list[object] = []
    thread = threading.Thread(target=lambda: done.append(ex.submit(pickled, SlowToPickle())), daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert done, "submit did not return"
    future = done[0]
    assert isinstance(future, corral.CorralFuture) and future.result(timeout=60) == "SlowToPickle"


def test_modules_beside_the_script_go_by_value_only_while_pickling_for_a_remote_host(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registered for good, they would change this process's other pickles (a class sent by
    value has its attributes reset on load: a test's instance counter was)."""
    import pickle
    import sys

    import cloudpickle

    from corral.engine.submitting import local_modules_by_value

    (tmp_path / "beside_the_script.py").write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import beside_the_script  # type: ignore[import-not-found]

    with local_modules_by_value(False):
        assert b"triple" in cloudpickle.dumps(beside_the_script.triple)  # by reference: its name
        assert "beside_the_script" not in cloudpickle.list_registry_pickle_by_value()
    with local_modules_by_value(True):
        data = cloudpickle.dumps(beside_the_script.triple)
    assert "beside_the_script" not in cloudpickle.list_registry_pickle_by_value()
    del sys.modules["beside_the_script"]
    sys.path.remove(str(tmp_path))
    assert pickle.loads(data)(2) == 6  # it needs no module to load: it went by value
