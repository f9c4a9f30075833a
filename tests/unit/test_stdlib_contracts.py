"""The contracts of ``concurrent.futures`` and ``multiprocessing.Pool`` where corral deviated
(issue 11, item 16), each tested as CPython's own test that found it
(Lib/test/test_concurrent_futures/, Lib/test/_test_multiprocessing.py), on the local backend.

Concurrency is measured from what the calls record (start and end times written by the
calls themselves), never by how long a test took.
"""

from __future__ import annotations

import dataclasses
import gc
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

import corral
from corral.backends.base import ArraySpec
from corral.engine.planning import Plan
from corral.engine.throttle import Throttle
from corral.engine.tracking import SubState
from corral.resources import Resources

from ..conftest import FAST

# -- what the calls run (module level: the worker imports them) ---------------------------------


def record(folder: str, tag: str, seconds: float) -> str:
    """Sleep, and leave a file saying when this call ran (its own clock readings)."""
    start = time.time()
    time.sleep(seconds)
    end = time.time()
    path = os.path.join(folder, tag)
    with open(path + ".tmp", "w") as out:
        out.write(f"{start} {end}")
    os.replace(path + ".tmp", path)
    return tag


def touch(path: str) -> None:
    with open(path, "w") as out:
        out.write("ran")


class MyObject:
    def my_method(self) -> None:
        pass


def make_dummy_object(_: object) -> MyObject:
    return MyObject()


class CountedObject:
    """As in _test_multiprocessing: counts the instances alive in this process."""

    n_instances = 0

    def __new__(cls) -> CountedObject:
        cls.n_instances += 1
        return object.__new__(cls)

    def __del__(self) -> None:
        type(self).n_instances -= 1


def identity(x: object) -> object:
    return x


class ErrorAtPickle:
    """As in test_concurrent_futures/test_deadlock.py: fails when pickled."""

    def __reduce__(self) -> tuple[object, ...]:
        raise pickle.PicklingError("Error in pickle")


def return_instance(cls: type) -> object:
    return cls()


def return_lock() -> object:
    return threading.Lock()


# -- helpers ------------------------------------------------------------------------------------


def intervals(folder: Path) -> list[tuple[float, float]]:
    found = []
    for path in folder.iterdir():
        if not path.name.endswith(".tmp"):
            start, end = path.read_text().split()
            found.append((float(start), float(end)))
    return found


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment (one ending as another starts: not both)."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def wait_until(predicate: object, what: str, timeout: float = 30) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def local_pool(workdir: str) -> Iterator[object]:
    made: list[corral.Pool] = []

    def make(processes: int | None) -> corral.Pool:
        pool = corral.Pool(
            processes, cluster=corral.Cluster(corral.get_backend("local"), workdir, policy=FAST)
        )
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.terminate()
        pool.cluster.close()


def run_script(tmp_path: Path, body: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``body`` as a script in ``tmp_path`` with a clean corral configuration (the
    fixtures' environment: no CORRAL_* settings, a private XDG_CONFIG_HOME)."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )


# -- a. the interpreter waits at exit for what it was given ---------------------------------------

SCRIPT_HEAD = """
    import sys, time
    import corral

    def sleep_and_touch(seconds, path):
        time.sleep(seconds)
        with open(path, "w") as out:
            out.write("apple")
"""


def test_interpreter_shutdown_waits_for_a_submitted_call(tmp_path: Path) -> None:
    # test_interpreter_shutdown: a script that ends right after submit() still runs the call.
    out = run_script(
        tmp_path,
        SCRIPT_HEAD
        + """
    if __name__ == "__main__":
        t = corral.Executor("local", directory="work")
        t.submit(sleep_and_touch, 1.0, "apple.txt")
    """,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert (tmp_path / "apple.txt").read_text() == "apple"


def test_shutdown_without_wait_still_runs_every_call_at_exit(tmp_path: Path) -> None:
    # test_shutdown_no_wait / test_hang_issue39205: after shutdown(wait=False) the calls not
    # started yet (held back by max_workers=1 here) run before the interpreter exits.
    out = run_script(
        tmp_path,
        SCRIPT_HEAD
        + """
    if __name__ == "__main__":
        t = corral.Executor("local", directory="work", max_workers=1)
        for i in range(3):
            t.submit(sleep_and_touch, 0.2, f"done{i}.txt")
        t.shutdown(wait=False)
    """,
    )
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in tmp_path.glob("done*.txt")) == ["done0.txt", "done1.txt", "done2.txt"]


def test_cancel_futures_without_wait_runs_only_what_had_started(tmp_path: Path) -> None:
    # test_cancel_futures_wait_false: the running call finishes at exit, the pending are cancelled.
    out = run_script(
        tmp_path,
        SCRIPT_HEAD
        + """
    if __name__ == "__main__":
        t = corral.Executor("local", directory="work", max_workers=1)
        first = t.submit(sleep_and_touch, 1.0, "first.txt")
        rest = [t.submit(sleep_and_touch, 0.1, f"rest{i}.txt") for i in range(2)]
        while first.state is not corral.JobState.RUNNING:
            time.sleep(0.02)
        t.shutdown(wait=False, cancel_futures=True)
        print(all(f.cancelled() for f in rest))
    """,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
    assert (tmp_path / "first.txt").read_text() == "apple"
    assert not list(tmp_path.glob("rest*.txt"))


def test_submit_after_interpreter_shutdown_raises(tmp_path: Path) -> None:
    # test_submit_after_interpreter_shutdown: submit() from an atexit handler raises.
    out = run_script(
        tmp_path,
        """
    import atexit
    import corral

    @atexit.register
    def run_last():
        try:
            t.submit(id, None)
        except RuntimeError:
            print("runtime-error")
            raise

    if __name__ == "__main__":
        t = corral.Executor("local", directory="work")
        t.submit(id, 42).result()
    """,
    )
    assert "RuntimeError: cannot schedule new futures after interpreter shutdown" in out.stderr
    assert out.stdout.strip() == "runtime-error"


def test_ctrl_c_while_waiting_at_exit_cancels_the_local_calls_and_exits_130(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import logging, os, time
            import corral

            def nap(path):
                with open(path, "w") as out:
                    out.write(str(os.getpid()))
                time.sleep(120)

            if __name__ == "__main__":
                logging.basicConfig(level=logging.INFO)  # says when the exit wait begins
                t = corral.Executor("local", directory="work")
                t.submit(nap, "pid.txt")
                while not os.path.exists("pid.txt"):
                    time.sleep(0.02)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # Ctrl-C must reach it
    )  # fmt: skip
    try:
        assert child.stderr is not None
        for line in child.stderr:  # Ctrl-C must come in the exit wait, which says when it begins
            if "waiting for 1 corral call(s)" in line:
                break
        pid = int((tmp_path / "pid.txt").read_text())
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130
    assert "corral: interrupted; cancelled 1 call(s) of local job(s)" in err
    assert "Traceback" not in err

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(gone, "the cancelled call's process to end")


# -- b. max_workers limits the executor, not each batch ---------------------------------------------


def test_max_workers_is_a_limit_of_the_executor(make_executor, tmp_path: Path) -> None:
    # test_saturation: however many submits, no more than max_workers calls at once.
    ran = tmp_path / "ran"
    ran.mkdir()
    ex = make_executor("local", max_workers=1)
    futures = [ex.submit(record, str(ran), f"call{i}", 0.3) for i in range(3)]
    assert [f.result(timeout=60) for f in futures] == ["call0", "call1", "call2"]
    assert most_at_once(intervals(ran)) == 1


def test_a_map_and_submits_share_the_limit(make_executor, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    ran.mkdir()
    ex = make_executor("local", max_workers=2)
    mapped = ex.map(record, [str(ran)] * 4, [f"map{i}" for i in range(4)], [0.3] * 4)
    single = [ex.submit(record, str(ran), f"one{i}", 0.3) for i in range(3)]
    assert len(list(mapped)) == 4
    assert [f.result(timeout=60) for f in single] == ["one0", "one1", "one2"]
    assert most_at_once(intervals(ran)) <= 2


def test_processes_is_a_limit_of_the_pool(local_pool, tmp_path: Path) -> None:
    # multiprocessing's Pool(1): apply_async calls run one after another.
    ran = tmp_path / "ran"
    ran.mkdir()
    pool = local_pool(1)
    results = [pool.apply_async(record, (str(ran), f"call{i}", 0.3)) for i in range(3)]
    results.append(pool.starmap_async(record, [(str(ran), "m0", 0.2), (str(ran), "m1", 0.2)]))
    assert [r.get(timeout=60) for r in results] == ["call0", "call1", "call2", ["m0", "m1"]]
    assert most_at_once(intervals(ran)) == 1


def test_max_workers_is_another_name_of_max_running(make_executor, workdir: str) -> None:
    assert make_executor("local", max_workers=3).max_running == 3
    assert make_executor("local", max_running=3).max_workers == 3
    with pytest.raises(corral.ResourceError, match="two names of the same limit"):
        corral.Executor("local", max_workers=2, max_running=2)
    for bad in (0, "3", 2.5, True):
        with pytest.raises(corral.ResourceError, match="max_workers=.*whole number"):
            corral.Executor("local", max_workers=bad)
    with pytest.raises(corral.ResourceError, match="processes='3' must be a whole number"):
        corral.Pool("3", backend="local", directory=workdir)  # type: ignore[arg-type]


def sub_of(elements: int) -> SubState:
    plan = Plan(0, elements, "pull", ((0, elements, 0),), total_elements=elements)
    spec = ArraySpec("/nowhere", 0, elements, Resources(), "corral-f", sys.executable, "/")
    return SubState(plan, spec, "/nowhere/subs/0.sh")


class Live:
    done = False  # what the throttle asks of a batch


def test_a_throttle_admits_in_order_and_counts_elements_until_final() -> None:
    throttle, batch = Throttle(2), Live()
    first, second, third = sub_of(2), sub_of(2), sub_of(1)
    assert throttle.room(batch, first) == 2  # type: ignore[arg-type]
    first.job_id = "J1"
    throttle.submitted(first)
    assert throttle.room(batch, second) == 0  # type: ignore[arg-type]
    assert throttle.room(batch, third) == 0  # type: ignore[arg-type]  # second came first
    first.final_at[0] = 1.0  # one element ended: room for one, given to the first in line
    assert throttle.room(batch, third) == 0  # type: ignore[arg-type]
    assert throttle.room(batch, second) == 1  # type: ignore[arg-type]
    second.plan = dataclasses.replace(
        second.plan, elements=1, total_elements=1
    )  # as the dispatcher shrinks it
    second.job_id = "J2"
    throttle.submitted(second)
    assert throttle.used() == 2 and throttle.waiting()
    with pytest.raises(ValueError):
        Throttle(0)


# -- c. map(timeout=) cancels the call it timed out on ----------------------------------------------


def test_map_timeout_cancels_the_call_it_waited_for(make_executor, tmp_path: Path) -> None:
    # Executor.map's result_iterator (3.11+): _result_or_cancel cancels the future that timed out.
    ex = make_executor("local", max_workers=1)
    blocker = ex.submit(time.sleep, 1.5)
    target = tmp_path / "should-not-run"
    results = ex.map(touch, [str(target)], timeout=0.3)
    with pytest.raises(TimeoutError):
        next(results)
    blocker.result(timeout=60)
    ex.shutdown(wait=True)
    assert not target.exists()


# -- d. results are freed once the user drops them ---------------------------------------------------


def test_map_keeps_no_reference_to_yielded_results(make_executor) -> None:
    # test_free_reference: the result iterator keeps no reference to what it yielded.
    ex = make_executor("local")
    for obj in ex.map(make_dummy_object, range(10)):
        wr = weakref.ref(obj)
        del obj
        gc.collect()
        assert wr() is None


def test_a_dropped_result_is_freed_before_the_next_submission(make_executor) -> None:
    ex = make_executor("local")
    future = ex.submit(make_dummy_object, 0)
    wr = weakref.ref(future.result(timeout=60))
    del future
    gc.collect()
    wait_until(lambda: gc.collect() >= 0 and wr() is None, "the result to be freed")


def test_pool_releases_results_once_dropped(local_pool) -> None:
    # _TestPool.test_release_task_refs: arguments and results are not kept alive.
    pool = local_pool(2)
    objs = [CountedObject() for _ in range(10)]
    refs = [weakref.ref(o) for o in objs]
    pool.map(identity, objs)
    del objs
    gc.collect()
    assert {wr() for wr in refs} == {None}
    wait_until(lambda: gc.collect() >= 0 and CountedObject.n_instances == 0, "the results to be freed")


# -- e. what a cluster cannot serve is refused at submit --------------------------------------------


def test_manager_proxies_are_refused_at_submit_with_what_to_do(make_executor) -> None:
    ex = make_executor("local")
    with multiprocessing.Manager() as manager:
        queue = manager.Queue()
        with pytest.raises(corral.SerializationError, match=r"argument 'q' of call 0.*Manager proxy") as info:
            ex.submit(identity, q=queue)
        assert "return values" in str(info.value)
        with pytest.raises(corral.SerializationError, match=r"argument 0 of call 1"):
            list(ex.map(identity, [1, [manager.dict()]]))
    assert ex.cluster.backend.poll([f"L{i}" for i in range(1, 5)]) == {}


def test_a_function_that_captured_a_manager_proxy_is_refused_at_submit(make_executor, workdir: str) -> None:
    ex = make_executor("local")
    with multiprocessing.Manager() as manager:
        queue = manager.Queue()

        def report(x: int) -> None:
            queue.put(x)

        with pytest.raises(corral.SerializationError, match=r"cannot pickle the function .*Manager proxy"):
            ex.submit(report, 1)
    assert not os.path.exists(workdir) or os.listdir(workdir) == []


@pytest.mark.parametrize(
    "make",
    [multiprocessing.Queue, multiprocessing.Lock, multiprocessing.Event, threading.Lock],
    ids=["mp.Queue", "mp.Lock", "mp.Event", "threading.Lock"],
)
def test_objects_of_this_machine_are_refused_at_submit(make_executor, make: object) -> None:
    assert callable(make)
    ex = make_executor("local")
    with pytest.raises(corral.SerializationError, match=r"argument 0 of call 0.*(this machine|this process)"):
        ex.submit(identity, make())
    assert ex.cluster.backend.poll([f"L{os.getpid()}-1"]) == {}  # its first job was never submitted


def test_pool_refuses_them_in_arguments_and_initargs(local_pool, workdir: str) -> None:
    pool = local_pool(1)
    with pytest.raises(corral.SerializationError, match="argument 0 of call 0"):
        pool.apply_async(identity, (threading.Lock(),))
    with pytest.raises(corral.SerializationError, match=r"initargs\[0\]"):
        corral.Pool(
            1, initializer=identity, initargs=(multiprocessing.Queue(),), backend="local", directory=workdir
        )


# -- f. a result that cannot be pickled raises what pickle raised -------------------------------------


def test_a_result_that_cannot_be_pickled_raises_picklingerror(make_executor) -> None:
    # test_deadlock.py's test_error_during_result_pickle_on_worker.
    ex = make_executor("local")
    with pytest.raises(pickle.PicklingError, match="could not pickle the result: Error in pickle") as info:
        ex.submit(return_instance, ErrorAtPickle).result(timeout=60)
    assert isinstance(info.value.__cause__, corral.RemoteTraceback)
    assert "Error in pickle" in info.value.__cause__.tb
    with pytest.raises(TypeError, match="could not pickle the result: cannot pickle '_thread.lock'"):
        ex.submit(return_lock).result(timeout=60)


# -- g. a pool that is not running cannot be entered --------------------------------------------------


def test_with_on_a_terminated_pool_raises(local_pool) -> None:
    # _TestPool.test_enter (bpo-35477).
    pool = local_pool(1)
    with pool:
        pass
    with pytest.raises(ValueError, match="Pool not running"), pool:
        pass
    pool.join()
