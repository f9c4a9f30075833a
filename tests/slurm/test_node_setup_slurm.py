"""The node setup, awaited futures and the client's logging on the real SLURM test cluster:
a ``setup=`` callable runs once per array element (counted by the files its runs leave), a
task's once per job of a Batch, 100 awaited futures gather in order, and a call's
``logging.info`` shows in its stderr at the client's level and format (not with
``forward_logging=False``)."""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import corral

pytestmark = pytest.mark.usefixtures("fresh_queue")

CLIENT_FORMAT = "CLIENT|%(levelname)s|%(name)s|%(message)s"


class Refused(Exception):
    """The call's own exception type."""


def mark_setup(folder: str) -> None:
    """One file per run, named by the array element and process that ran it."""
    element = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    (Path(folder) / f"{element}-{os.getpid()}").touch(exist_ok=False)
    os.environ["SETUP_DONE"] = element


def seen(x: int) -> tuple[int, str, str | None]:
    element = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return x, element, os.environ.get("SETUP_DONE")


def square(x: int) -> int:
    return x * x


def refuse(x: int) -> int:
    raise Refused(f"no {x}")


def talk(x: int) -> int:
    logging.getLogger("node.calls").info("info line %d", x)
    logging.getLogger("node.calls").debug("debug line %d", x)
    return x


@pytest.fixture
def client_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(logging.Formatter(CLIENT_FORMAT))
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_setup_runs_once_per_array_element(make_executor, tmp_path: Path) -> None:
    folder = tmp_path / "marks"
    folder.mkdir()
    ex = make_executor("slurm", setup=["export FROM_SHELL=1", functools.partial(mark_setup, str(folder))])
    results = list(ex.map(seen, range(40), chunksize=10))  # 4 elements of 10 calls
    assert [r[0] for r in results] == list(range(40))
    assert all(element == setup for _, element, setup in results)  # each call after its element's setup
    runs = sorted(p.name.rsplit("-", 1)[0] for p in folder.iterdir())
    assert runs == sorted({element for _, element, _ in results}) and len(runs) == 4


def test_a_task_setup_runs_once_per_job_of_a_batch(tmp_path: Path) -> None:
    folder = tmp_path / "marks"
    folder.mkdir()
    corral.set_defaults(backend="slurm", directory=str(tmp_path / "work"))
    prepared = corral.task(setup=functools.partial(mark_setup, str(folder)))(seen)
    with corral.Batch(max_size=5):
        refs = [prepared.distribute(i) for i in range(10)]  # 2 jobs of 5 calls
    results = [r.result(timeout=180) for r in refs]
    assert all(element == setup for _, element, setup in results)
    runs = sorted(p.name.rsplit("-", 1)[0] for p in folder.iterdir())
    assert runs == sorted({element for _, element, _ in results}) and len(runs) == 2


def test_100_awaited_futures_gather_in_order(make_executor) -> None:
    ex = make_executor("slurm")

    async def main() -> tuple[list[int], BaseException]:
        values = await asyncio.gather(*(ex.submit(square, i) for i in range(100)))
        try:
            await ex.submit(refuse, 3)
        except Refused as exc:
            return values, exc
        raise AssertionError("the failing call returned")

    values, error = asyncio.run(main())
    assert values == [i * i for i in range(100)]
    assert type(error) is Refused and str(error) == "no 3"


def test_the_clients_logging_reaches_the_calls_stderr(make_executor, client_logging) -> None:
    forwarded = make_executor("slurm").submit(talk, 1)
    silent = make_executor("slurm", forward_logging=False).submit(talk, 2)
    assert forwarded.result(timeout=180) == 1 and silent.result(timeout=180) == 2
    err = forwarded.stderr()
    assert "CLIENT|INFO|node.calls|info line 1" in err.splitlines() and "debug line" not in err
    assert "line 2" not in silent.stderr()


def mark_init(folder: str, tag: str) -> None:
    (Path(folder) / f"init-{tag}-{os.environ['SLURM_ARRAY_TASK_ID']}-{os.getpid()}").touch(exist_ok=False)


class NoLicense(Exception):
    """The setup's own exception type."""


def failing_setup() -> None:
    raise NoLicense("no license server")


def test_a_pool_runs_its_initializer_once_per_element(tmp_path: Path) -> None:
    folder = tmp_path / "marks"
    folder.mkdir()
    with corral.Pool(
        initializer=mark_init, initargs=(str(folder), "p"), backend="slurm", directory=str(tmp_path / "work")
    ) as pool:
        results = pool.map(seen, range(20), chunksize=5)  # 4 elements
    elements = {element for _, element, _ in results}
    assert len(elements) == 4 and len(list(folder.glob("init-p-*"))) == 4


def test_a_failing_setup_fails_the_calls_with_its_own_exception(make_executor) -> None:
    futures = [make_executor("slurm", setup=failing_setup).submit(square, i) for i in range(3)]
    for future in futures:
        error = future.exception(timeout=180)
        assert type(error) is NoLicense and any("node setup" in note for note in error.__notes__)
