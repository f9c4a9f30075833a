"""The Executor contract on the backends that need no cluster (local, sequential).
The same behaviours are proven against real SLURM in tests/slurm/."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import textwrap
import time

import pytest

import corral
from corral import JobState

BACKENDS = ["local", "sequential"]


def square(x: int) -> int:
    return x * x


def fail(message: str) -> None:
    raise ValueError(message)


def echo(*args: object, **kwargs: object) -> tuple[object, ...]:
    return args, kwargs


def chatty(x: int) -> int:
    print(f"hello {x}")
    print(f"warning {x}", file=sys.stderr)
    return x


@pytest.mark.parametrize("backend", BACKENDS)
def test_map_returns_values_in_order(make_executor, backend: str) -> None:
    ex = make_executor(backend)
    assert list(ex.map(square, range(200))) == [x * x for x in range(200)]
    assert list(ex.map(pow, [2, 3], [5, 2])) == [32, 9]


@pytest.mark.parametrize("backend", BACKENDS)
def test_submit_gives_real_futures(make_executor, backend: str) -> None:
    ex = make_executor(backend)
    futures = [ex.submit(square, i) for i in range(5)]
    assert all(isinstance(f, concurrent.futures.Future) for f in futures)
    done, not_done = concurrent.futures.wait(futures, timeout=60)
    assert not not_done
    assert sorted(f.result() for f in concurrent.futures.as_completed(futures)) == [0, 1, 4, 9, 16]
    assert futures[2].state is JobState.COMPLETED
    assert futures[2].job_id and futures[2].job_id.endswith("_0")


def test_stdout_and_stderr_per_call(make_executor) -> None:
    ex = make_executor("local")
    futures = [ex.submit(chatty, i) for i in range(2)]
    assert [f.result(timeout=60) for f in futures] == [0, 1]
    assert futures[1].stdout() == "hello 1\n"
    assert futures[1].stderr() == "warning 1\n"


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_users_own_exception_comes_back_with_the_remote_traceback(make_executor, backend: str) -> None:
    ex = make_executor(backend)
    future = ex.submit(fail, "x")
    with pytest.raises(ValueError) as info:
        future.result(timeout=60)
    assert str(info.value) == "x"
    if sys.version_info >= (3, 11):
        assert f"job {future.job_id}" in info.value.__notes__[0]
    cause = info.value.__cause__
    assert isinstance(cause, corral.RemoteTraceback)
    assert "raise ValueError(message)" in cause.tb
    assert future.state is JobState.FAILED


@pytest.mark.parametrize("backend", BACKENDS)
def test_lambdas_and_closures(make_executor, backend: str) -> None:
    ex = make_executor(backend)
    offset = 10
    assert ex.submit(lambda x: x + offset, 5).result(timeout=60) == 15


ODD = [
    'it\'s "quoted"',
    "`touch /tmp/corral-pwned`",
    "$(touch /tmp/corral-pwned)",
    "new\nline",
    "grüße ☃ 日本",
    "a\\b",
    "; rm -rf /",
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_odd_arguments_arrive_intact(make_executor, backend: str) -> None:
    ex = make_executor(backend)
    assert ex.submit(echo, *ODD, key=ODD[0]).result(timeout=60) == (tuple(ODD), {"key": ODD[0]})
    assert list(ex.map(echo, ODD)) == [((s,), {}) for s in ODD]
    assert not os.path.exists("/tmp/corral-pwned")


def test_functions_from_main_run(tmp_path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import corral

            class Point:
                def __init__(self, x): self.x = x

            def double(p):
                return Point(p.x * 2)

            if __name__ == "__main__":
                with corral.Executor("local", directory="work") as ex:
                    print(sum(p.x for p in ex.map(double, [Point(i) for i in range(10)])))
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "90"


def test_unpicklable_argument_fails_before_submitting(make_executor) -> None:
    import threading

    ex = make_executor("local")
    with pytest.raises(corral.SerializationError, match="call 1"):
        list(ex.map(echo, [1, threading.Lock()]))
    assert ex.cluster.backend.poll([f"L{i}" for i in range(1, 5)]) == {}


def test_unknown_resource_fails_at_construction() -> None:
    with pytest.raises(corral.ResourceError, match="'cpu'.*cpus"):
        corral.Executor("local", cpu=2)


def test_time_limit_is_enforced_with_a_clear_error(make_executor) -> None:
    ex = make_executor("local", time=timedelta_seconds(1))
    future = ex.submit(time.sleep, 60)
    with pytest.raises(corral.JobTimeoutError, match="TIMEOUT") as info:
        future.result(timeout=60)
    assert info.value.job_id == future.job_id
    assert future.state is JobState.TIMEOUT


def timedelta_seconds(seconds: int) -> object:
    from datetime import timedelta

    return timedelta(seconds=seconds)


def die_loudly() -> None:
    print("about to die: disk quota exceeded", file=sys.stderr, flush=True)
    os._exit(3)


def test_a_worker_that_dies_reports_the_state_and_its_stderr(make_executor) -> None:
    ex = make_executor("local")
    future = ex.submit(die_loudly)
    with pytest.raises(corral.JobFailedError, match=r"(?s)ended FAILED.*about to die: disk quota") as info:
        future.result(timeout=60)
    assert info.value.job_id == future.job_id
    assert info.value.stderr_tail == "about to die: disk quota exceeded"


def test_cancelling_a_pending_future_removes_its_job(make_executor) -> None:
    ex = make_executor("local")
    blockers = ex._submit(time.sleep, [((30,), {})] * (os.cpu_count() or 1), 1)  # every slot taken
    waiting = ex.submit(square, 3)
    deadline = time.monotonic() + 30  # its burst of submits goes out once the loop pauses
    while waiting.job_id is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert waiting.state is JobState.PENDING
    assert waiting.cancel()
    assert waiting.cancelled()
    job = waiting.job_id.split("_")[0]
    assert ex.cluster.backend.poll([job])[f"{job}_0"].state is JobState.CANCELLED
    for blocker in blockers:
        assert not blocker.cancel() or blocker.cancelled()
    ex.cancel_all()


def test_leaving_with_on_an_exception_cancels_the_jobs(make_executor) -> None:
    ex = make_executor("local")
    with pytest.raises(KeyboardInterrupt), ex:
        running = ex.submit(time.sleep, 60)
        deadline = time.monotonic() + 30
        while running.state is not JobState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)
        raise KeyboardInterrupt
    with pytest.raises(corral.JobCancelledError):
        running.result(timeout=10)
    job = running.job_id.split("_")[0]
    deadline = time.monotonic() + 10
    while ex.cluster.backend.poll([job])[f"{job}_0"].state is not JobState.CANCELLED:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_shutdown_can_cancel_what_has_not_started(make_executor) -> None:
    ex = make_executor("local", max_running=1)
    futures = [ex.submit(time.sleep, 0.5) for _ in range(3)] + list(
        ex._submit(square, [((i,), {}) for i in range(4)], 1)
    )
    ex.shutdown(wait=True, cancel_futures=True)
    assert any(f.cancelled() for f in futures)
    assert all(f.done() for f in futures)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 1)


def test_map_timeout(make_executor) -> None:
    ex = make_executor("local")
    results = ex.map(time.sleep, [30], timeout=0.5)
    with pytest.raises(TimeoutError):
        next(results)


def submit_from_inside(allow: bool) -> int:
    with corral.Executor("local", directory=os.environ["CORRAL_TEST_DIR"], allow_nested=allow) as inner:
        return inner.submit(square, 4).result()


def test_jobs_do_not_submit_jobs_by_accident(make_executor, workdir, monkeypatch) -> None:
    monkeypatch.setenv("CORRAL_TEST_DIR", workdir)
    ex = make_executor("local")
    with pytest.raises(corral.NestedSubmissionError, match="allow_nested=True"):
        ex.submit(submit_from_inside, False).result(timeout=60)
    assert ex.submit(submit_from_inside, True).result(timeout=60) == 16


def test_get_executor_names(monkeypatch, tmp_path) -> None:
    for name, expected in [("local", "local"), ("multiprocessing", "local"), ("sequential", "sequential")]:
        assert corral.get_executor(name, directory=str(tmp_path)).backend == expected
    monkeypatch.setenv("PATH", str(tmp_path))  # no scheduler commands anywhere
    assert corral.get_executor("auto", directory=str(tmp_path)).backend == "local"
    with pytest.raises(corral.CorralError, match="unknown backend 'slrum'"):
        corral.get_executor("slrum")


def test_work_dir_records_the_batch(make_executor, workdir) -> None:
    ex = make_executor("local")
    future = ex.submit(chatty, 7)
    future.result(timeout=60)
    batch = os.path.join(workdir, future.batch)
    assert os.stat(workdir).st_mode & 0o777 == 0o700
    assert sorted(os.listdir(batch)) == [
        "attempts",
        "calls.bin",
        "calls.idx",
        "cancels",
        "checkpoints",
        "claims",
        "engine.pkl",
        "function.pkl",
        "logs",
        "manifest.json",
        "results",
        "stops",
        "streams",
        "subs",
    ]
    assert sorted(os.listdir(os.path.join(batch, "subs"))) == ["0.job", "0.json", "0.pkl", "0.sh"]
    # The element's one stream and its calls' output; one chunk claim; a small result inline.
    element = future.job_id
    assert sorted(os.listdir(os.path.join(batch, "streams"))) == [
        f"{element}.{s}" for s in ("err", "log", "out")
    ]
    assert os.listdir(os.path.join(batch, "claims")) == ["0.0"]
    assert os.listdir(os.path.join(batch, "results")) == []


def test_a_module_the_nodes_cannot_import_is_explained(make_executor, tmp_path, monkeypatch) -> None:
    # Functions from modules travel by reference; a node without the module cannot even start.
    (tmp_path / "only_here.py").write_text("def work(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import only_here  # type: ignore[import-not-found]

    ex = make_executor("local")
    monkeypatch.setattr(
        sys, "path", [p for p in sys.path if p != str(tmp_path)]
    )  # the client's path, as shipped
    (tmp_path / "only_here.py").unlink()
    futures = ex._submit(only_here.work, [((i,), {}) for i in range(3)], None)
    for future in futures:
        with pytest.raises(corral.JobFailedError, match=r"(?s)FAILED.*No module named 'only_here'"):
            future.result(timeout=60)
