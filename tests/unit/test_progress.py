"""progress(), should_stop() and Stopped on the node: records in the element's stream, a stop
of one running call that leaves the calls beside it alone, and nothing outside corral."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from corral.store.batch import BatchStore
from corral.store.protocol import Mode
from corral.store.streams import Progress, Result, StreamReader, StreamWriter
from corral.worker.progress import Stopped, enter_call, leave_call, progress, should_stop
from corral.worker.run import run_element

from .test_worker import items, make_batch, plan_of, results


def steps(n: int) -> int:
    for i in range(n):
        progress(i, n, loss=1.0 / (i + 1), phase="train", best=i == 0, note=None)
    return n


def test_progress_records_go_to_the_stream_in_order(tmp_path: Path) -> None:
    store = make_batch(tmp_path, steps, [((3,), {})], plan_of(Mode.STATIC, 1, chunk=1))
    run_element(store.path, 0, 0, "J_0")
    found = [i for i in items(store, "J_0") if type(i) is Progress]
    assert [(p.call, p.attempt, p.step, p.total) for p in found] == [(0, 0, 0, 3), (0, 0, 1, 3), (0, 0, 2, 3)]
    assert found[1].metrics == {"loss": 0.5, "phase": "train", "best": False, "note": None}
    kinds = [type(i).__name__ for i in items(store, "J_0")]
    assert kinds.index("Progress") < kinds.index("Result")


def test_outside_corral_progress_and_should_stop_do_nothing() -> None:
    assert progress(1, 10, loss=0.1) is None
    assert should_stop() is False
    assert steps(2) == 2


@pytest.fixture
def in_a_call(tmp_path: Path) -> Any:
    store = make_batch(tmp_path, abs, [], plan_of(Mode.STATIC, 1, chunk=1))
    writer = StreamWriter(store.stream_path("J_0"))
    token = enter_call(writer, store, 4, 1)
    yield store
    leave_call(token)
    writer.close()


@pytest.mark.parametrize(
    ("args", "kwargs", "says"),
    [
        ((1,), {"weights": [1, 2]}, "metric 'weights' must be an int, float, str, bool or None, not list"),
        ((1,), {"obj": object()}, "metric 'obj'"),
        (("1",), {}, "step must be a number, not str"),
        ((True,), {}, "step must be a number, not bool"),
        ((1, "10"), {}, "total must be a number, not str"),
    ],
)
def test_a_value_a_record_cannot_hold_is_a_type_error(
    in_a_call: BatchStore, args: tuple[Any, ...], kwargs: dict[str, Any], says: str
) -> None:
    with pytest.raises(TypeError, match=says):
        progress(*args, **kwargs)
    assert items(in_a_call, "J_0") == []


def test_ten_thousand_progress_calls_are_one_write_each(in_a_call: BatchStore) -> None:
    for i in range(10_000):
        progress(i, 10_000, loss=1.0 / (i + 1))
    found = items(in_a_call, "J_0")
    assert len(found) == 10_000 and all(type(p) is Progress and p.call == 4 for p in found)


def test_should_stop_sees_the_request_once_and_keeps_it(in_a_call: BatchStore) -> None:
    assert not should_stop()
    in_a_call.request_stop(4, 1)
    in_a_call.request_stop(4, 1)  # twice is harmless
    for _ in range(1000):  # looked up at most every 0.2 s
        if should_stop():
            break
        time.sleep(0.01)
    assert should_stop() and in_a_call.stop_requested(4, 1) and not in_a_call.stop_requested(4, 0)
    with pytest.raises(Stopped, match="call 4 was asked to stop"):
        progress(1)


def until_stopped(stream: str) -> str:
    """Reports progress until asked to stop (at most ~20 s); the test asks when it sees one."""
    for i in range(2000):
        progress(i)
        time.sleep(0.01)
    return f"not stopped ({stream})"


def test_a_stop_ends_one_running_call_and_not_those_beside_it(tmp_path: Path) -> None:
    store = make_batch(tmp_path, abs, [], plan_of(Mode.STATIC, 3, chunk=3))
    stream = store.stream_path("J_0")
    calls = [((stream,), {}), ((stream,), {}), ((stream,), {})]
    store.write_batch({}, _pack(until_stopped), [cloudpickle.dumps(c) for c in calls])
    for call in (0, 2):
        store.mark_cancel(call, 0)  # only call 1 runs: the one to stop

    def stop_call_1() -> None:
        for _ in range(2000):
            if os.path.exists(stream) and any(
                type(i) is Progress and i.call == 1 for _, i in StreamReader().feed(Path(stream).read_bytes())
            ):
                store.request_stop(1, 0)
                return
            time.sleep(0.01)

    asker = threading.Thread(target=stop_call_1)
    asker.start()
    run = run_element(store.path, 0, 0, "J_0")
    asker.join()
    assert (run.ran, run.failed) == (1, 1)
    stopped = results(store, "J_0")[1]
    assert (stopped.ok, stopped.type_name) == (False, "corral.worker.progress.Stopped")
    assert isinstance(cloudpickle.loads(stopped.payload), Stopped)


def stop_one(x: int) -> int:
    progress(0)
    return x


def test_calls_packed_with_a_stopped_one_run_on(tmp_path: Path) -> None:
    store = make_batch(tmp_path, stop_one, [((i,), {}) for i in range(3)], plan_of(Mode.STATIC, 3, chunk=3))
    store.request_stop(1, 0)  # asked before it started: its first progress() raises
    assert run_element(store.path, 0, 0, "J_0") == (3, 1, 0)
    done = results(store, "J_0")
    assert [done[c].ok for c in range(3)] == [True, False, True]
    assert done[1].type_name == "corral.worker.progress.Stopped"
    assert type(done[0]) is Result and cloudpickle.loads(done[2].payload) == 2


def _pack(fn: Any) -> bytes:
    from corral.worker.run import pack_function

    return pack_function(fn)
