"""joblib's "corral" backend on the local backend: the same values as joblib's own loop, one
batch per Parallel call, the task's own exception with the rest cancelled, n_jobs read as
corral's limit, and no jobs submitted from inside a job unless asked.
scikit-learn's GridSearchCV runs through it on real SLURM (tests/slurm/test_joblib_slurm.py) and
in docs/joblib.md's example (tests/unit/test_docs_joblib.py)."""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest

import corral
import corral.joblib
from corral.backends.local import LocalBackend
from corral.engine.futures import CorralFuture
from corral.frontends.joblib_backend import GROWTH, batch_size

from ..conftest import FAST


@pytest.fixture
def engine(workdir: str) -> Iterator[corral.Cluster]:
    cluster = corral.Cluster(corral.get_backend("local"), workdir, policy=FAST)
    yield cluster
    cluster.close()


class Recording(corral.joblib.CorralBackend):
    """The backend, keeping the future of every corral call it made."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.futures: list[CorralFuture] = []

    def submit(
        self, func: Callable[[], list[Any]], callback: Callable[[Any], None] | None = None
    ) -> CorralFuture:
        future = super().submit(func, callback)
        self.futures.append(future)
        return future


def batches(workdir: str) -> list[str]:
    return sorted(os.listdir(workdir)) if os.path.isdir(workdir) else []


def square(x: int) -> int:
    return x * x


def fail_first(x: int, folder: str) -> int:
    if x == 0:
        raise KeyError(f"no key {x}")
    time.sleep(600)  # only a cancel ends it before the test's own time-out
    Path(folder, str(x)).write_text("finished")
    return x


def stay(x: int, folder: str) -> int:
    start = time.time()
    time.sleep(0.2)
    Path(folder, str(x)).write_text(f"{start} {time.time()}")
    return x


def pid(_: int) -> int:
    return os.getpid()


def inner_pids(n: int, directory: str, allow_nested: bool) -> tuple[int, list[int], list[int]]:
    """In a job: a Parallel call under the corral backend, and one under joblib's defaults."""
    options: dict[str, Any] = {"scheduler": "local", "directory": directory, "allow_nested": allow_nested}
    with joblib.parallel_config(backend="corral", **options):
        ours = joblib.Parallel(n_jobs=-1)(joblib.delayed(pid)(i) for i in range(n))
    plain = joblib.Parallel(n_jobs=2)(joblib.delayed(pid)(i) for i in range(n))
    return os.getpid(), ours, plain


def test_n_jobs_minus_1_gives_the_values_of_n_jobs_1_in_one_batch(
    engine: corral.Cluster, workdir: str
) -> None:
    tasks = [joblib.delayed(square)(i) for i in range(50)]
    alone = joblib.Parallel(n_jobs=1)(tasks)
    with joblib.parallel_config(backend="corral", cluster=engine):
        spread = joblib.Parallel(n_jobs=-1)(tasks)
    assert spread == alone == [i * i for i in range(50)]
    assert len(batches(workdir)) == 1  # every task went to the engine in one burst: one batch


class SlowToPickle:
    """An argument that takes longer to pickle than a burst of submits may pause."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce__(self) -> tuple[type[SlowToPickle], tuple[int]]:
        time.sleep(0.02)
        return SlowToPickle, (self.value,)


def unwrap(x: SlowToPickle) -> int:
    return x.value


def test_tasks_slow_to_pickle_are_still_one_batch(engine: corral.Cluster, workdir: str) -> None:
    with joblib.parallel_config(backend="corral", cluster=engine):
        assert joblib.Parallel(n_jobs=-1)(joblib.delayed(unwrap)(SlowToPickle(i)) for i in range(10)) == list(
            range(10)
        )
    assert len(batches(workdir)) == 1  # gathered until joblib waits, not until a pause


def test_the_old_parallel_backend_spelling_works_too(engine: corral.Cluster) -> None:
    with joblib.parallel_backend("corral", cluster=engine):
        assert joblib.Parallel()(joblib.delayed(square)(i) for i in range(5)) == [0, 1, 4, 9, 16]


def test_a_backend_instance_and_return_as_generator(engine: corral.Cluster) -> None:
    with joblib.parallel_config(backend=corral.joblib.CorralBackend(cluster=engine), n_jobs=-1):
        results = joblib.Parallel(return_as="generator")(joblib.delayed(square)(i) for i in range(6))
        assert list(results) == [0, 1, 4, 9, 16, 25]


def test_many_tiny_tasks_become_few_calls(engine: corral.Cluster) -> None:
    backend = Recording(cluster=engine, max_running=2)
    with joblib.parallel_config(backend=backend):
        assert joblib.Parallel(n_jobs=-1)(joblib.delayed(square)(i) for i in range(5000)) == [
            i * i for i in range(5000)
        ]
    # 16 calls of one task, then calls that grow with what was dispatched: about a hundred.
    assert 16 < len(backend.futures) < 200
    assert all(f.done() for f in backend.futures)


def test_batch_sizes_grow_with_what_was_dispatched() -> None:
    assert [batch_size(n, 4) for n in (0, 1, GROWTH * 4 - 1)] == [1, 1, 1]
    assert [batch_size(GROWTH * 4 * k, 4) for k in (1, 2, 10)] == [1, 2, 10]
    assert batch_size(100, 0) == batch_size(100, 1)


def test_the_tasks_own_exception_comes_back_and_the_rest_is_cancelled(
    engine: corral.Cluster, tmp_path: Path
) -> None:
    backend = Recording(cluster=engine)
    marks = tmp_path / "marks"
    marks.mkdir()
    with joblib.parallel_config(backend=backend), pytest.raises(KeyError, match="no key 0") as raised:
        joblib.Parallel(n_jobs=-1)(joblib.delayed(fail_first)(i, str(marks)) for i in range(10))
    assert "fail_first" in str(raised.value.__cause__)  # the node's traceback
    concurrent.futures.wait(backend.futures)  # the sleepers were cancelled, running or not
    assert len(backend.futures) == 10
    rest = backend.futures[1:]
    assert all(f.cancelled() or isinstance(f.exception(), corral.JobCancelledError) for f in rest)
    assert not list(marks.iterdir())  # none of them finished


def test_max_running_1_runs_the_tasks_one_at_a_time_on_the_backend(
    engine: corral.Cluster, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    with joblib.parallel_config(backend="corral", cluster=engine, max_running=1):
        assert joblib.effective_n_jobs(-1) == 2  # not 1, which joblib would run in this process
        pids = joblib.Parallel(n_jobs=-1)(joblib.delayed(pid)(i) for i in range(3))
        joblib.Parallel(n_jobs=-1)(joblib.delayed(stay)(i, str(marks)) for i in range(3))
    assert os.getpid() not in pids
    spans = sorted(tuple(map(float, p.read_text().split())) for p in marks.iterdir())
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False))


def test_n_jobs_is_read_as_corrals_limit(workdir: str) -> None:
    engine = corral.Cluster(LocalBackend(slots=4), workdir, policy=FAST)
    try:
        with joblib.parallel_config(backend="corral", cluster=engine):
            assert [joblib.effective_n_jobs(n) for n in (-1, -2, 3, 1)] == [4, 3, 3, 1]
        with joblib.parallel_config(backend="corral", cluster=engine, max_running=3):
            assert [joblib.effective_n_jobs(n) for n in (-1, -2, 8, 2)] == [3, 2, 3, 2]
    finally:
        engine.close()


def test_n_jobs_1_runs_in_this_process(engine: corral.Cluster, workdir: str) -> None:
    with joblib.parallel_config(backend="corral", cluster=engine):
        assert joblib.Parallel(n_jobs=1)(joblib.delayed(pid)(i) for i in range(3)) == [os.getpid()] * 3
    assert batches(workdir) == []


def test_inside_a_job_joblib_runs_in_threads_not_jobs(engine: corral.Cluster, workdir: str) -> None:
    with joblib.parallel_config(backend="corral", cluster=engine):
        [(outer, ours, plain)] = joblib.Parallel(n_jobs=-1)([joblib.delayed(inner_pids)(4, workdir, False)])
    assert outer != os.getpid()  # the outer call ran in a job
    assert ours == plain == [outer] * 4  # the inner ones in that job's own process
    assert len(batches(workdir)) == 1


def test_inside_a_job_allow_nested_submits_jobs(engine: corral.Cluster, workdir: str) -> None:
    with joblib.parallel_config(backend="corral", cluster=engine):
        [(outer, ours, plain)] = joblib.Parallel(n_jobs=-1)([joblib.delayed(inner_pids)(4, workdir, True)])
    assert outer not in ours and plain == [outer] * 4
    assert len(batches(workdir)) == 2  # the outer batch, and the one submitted from its job


def test_options_are_checked_at_parallel_config(engine: corral.Cluster) -> None:
    with pytest.raises(corral.ResourceError, match="memory"):
        joblib.parallel_config(backend="corral", cluster=engine, mem="4G")
    with pytest.raises(corral.ResourceError, match="corral's backend is scheduler="):
        joblib.parallel_config(backend="corral", cluster=engine, backends="slurm")
    with pytest.raises(corral.ResourceError, match="max_workers"):
        joblib.parallel_config(backend="corral", cluster=engine, max_workers=2, max_running=2)
    with (
        joblib.parallel_config(backend="corral", cluster=engine),
        pytest.raises(TypeError, match="parallel_config"),
    ):
        joblib.Parallel(n_jobs=2, time="1:00:00")(joblib.delayed(square)(i) for i in range(2))
