"""The worker on its own: claims, outcomes, streams, and what it never deletes."""

import os
import pickle
import threading

import cloudpickle
import pytest

from corral.engine.planning import Plan
from corral.store.batch import BatchStore
from corral.store.protocol import Claim, WorkerOptions
from corral.transports import LocalTransport
from corral.worker.run import element_order, pack_function, run_element


def make_batch(tmp_path, fn, calls, plan, options=None):
    store = BatchStore.create(str(tmp_path), "t", LocalTransport())
    store.write_batch({}, pack_function(fn), [cloudpickle.dumps(c) for c in calls])
    store.write_submission(0, plan.worker_plan(options), "#!/bin/bash\n")
    return store


def noisy(x):
    print(f"out {x}")
    os.system(f"echo child {x} >&2")
    if x == 2:
        raise KeyError(x)
    return x + 1


def test_pull_order_starts_each_element_at_its_own_offset() -> None:
    plan = Plan(0, 4, "pull", ((0, 8, 0),), first_element=0, total_elements=4).worker_plan()
    assert element_order(plan, 0)[:2] == [(0, 0), (1, 0)]
    assert element_order(plan, 1)[:2] == [(2, 0), (3, 0)]
    assert sorted(element_order(plan, 3)) == [(i, 0) for i in range(8)]


def test_static_order_is_the_elements_chunk() -> None:
    plan = Plan(0, 3, "static", ((0, 7, 0),), chunk=3).worker_plan()
    assert element_order(plan, 2) == [(6, 0)]


def test_each_call_runs_once_however_many_elements_pull(tmp_path) -> None:
    store = make_batch(
        tmp_path, noisy, [((i,), {}) for i in range(5)], Plan(0, 2, "pull", ((0, 5, 0),), total_elements=2)
    )
    ran = run_element(store.path, 0, 0, "J_0")[0] + run_element(store.path, 0, 1, "J_1")[0]
    assert ran == 5
    assert store.finished() == {(i, 0) for i in range(5)}
    assert store.read_claim(3, 0) == Claim("J_0", os.uname().nodename, os.getpid())


def test_each_call_reads_its_own_payload(tmp_path) -> None:
    calls = [((i, "x" * i), {"k": i}) for i in range(50)]
    store = make_batch(tmp_path, noisy, calls, Plan(0, 1, "static", ((0, 50, 0),), chunk=50))
    fresh = BatchStore(store.path, LocalTransport())
    assert [cloudpickle.loads(fresh.read_call(i)) for i in (49, 0, 17)] == [calls[49], calls[0], calls[17]]


def test_outcomes_and_streams_per_call(tmp_path) -> None:
    store = make_batch(
        tmp_path, noisy, [((i,), {}) for i in range(3)], Plan(0, 1, "static", ((0, 3, 0),), chunk=3)
    )
    run_element(store.path, 0, 0, "J_0")
    ok = store.read_outcome(1, 0)
    assert ok.ok and cloudpickle.loads(ok.payload) == 2
    bad = store.read_outcome(2, 0)
    assert not bad.ok and bad.type_name == "builtins.KeyError"
    assert "raise KeyError(x)" in bad.traceback
    assert isinstance(cloudpickle.loads(bad.payload), KeyError)
    assert store.read_text(store.call_log(1, 0, "out")) == "out 1\n"
    assert store.read_text(store.call_log(1, 0, "err")) == "child 1\n"
    assert "KeyError" in store.read_text(store.call_log(2, 0, "err"))


def test_inputs_are_kept_and_folders_private(tmp_path) -> None:
    store = make_batch(tmp_path, noisy, [((0,), {})], Plan(0, 1, "static", ((0, 1, 0),), chunk=1))
    run_element(store.path, 0, 0, "J_0")
    assert os.path.exists(os.path.join(store.path, "calls.bin"))
    assert os.path.exists(os.path.join(store.path, "function.pkl"))
    for folder in ("", "subs", "claims", "results", "logs"):
        assert os.stat(os.path.join(store.path, folder)).st_mode & 0o777 == 0o700
    for name in ("calls.bin", "calls.idx", "function.pkl"):
        assert os.stat(os.path.join(store.path, name)).st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("restart_env", "count", "reran"), [("MY_RESTARTS", "1", 1), ("MY_RESTARTS", "0", 0), (None, "1", 0)]
)
def test_requeued_element_reruns_what_it_had_claimed(
    tmp_path, monkeypatch, restart_env, count, reran
) -> None:
    """The plan names the variable that says "this is a rerun" (the backend's); a variable
    the plan does not name means nothing to the worker."""
    plan = Plan(0, 1, "static", ((0, 2, 0),), chunk=2)
    store = make_batch(
        tmp_path, noisy, [((0,), {}), ((1,), {})], plan, WorkerOptions(restart_env=restart_env)
    )
    assert store.claim(0, 0, Claim("J_0", "oldhost", 1))  # taken before a requeue, never finished
    assert store.claim(1, 0, Claim("K_0", "otherhost", 1))  # somebody else's
    monkeypatch.setenv("MY_RESTARTS", count)
    assert run_element(store.path, 0, 0, "J_0") == (reran, 0, 0)
    assert store.finished() == ({(0, 0)} if reran else set())


def test_unpicklable_exception_and_result_are_reported_as_text(tmp_path) -> None:
    class Unpicklable(Exception):
        def __reduce__(self):
            raise TypeError("no pickling me")

    def f(kind):
        if kind == "raise":
            raise Unpicklable("boom")
        return threading.Lock()

    store = make_batch(
        tmp_path, f, [(("raise",), {}), (("file",), {})], Plan(0, 1, "static", ((0, 2, 0),), chunk=2)
    )
    run_element(store.path, 0, 0, "J_0")
    raised = store.read_outcome(0, 0)
    assert (raised.ok, raised.payload, raised.message) == (False, b"", "boom")
    unpicklable_result = store.read_outcome(1, 0)
    assert not unpicklable_result.ok and "could not pickle the result" in unpicklable_result.message
    assert pickle.loads(pickle.dumps(unpicklable_result)) == unpicklable_result
