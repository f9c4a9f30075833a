"""``await future`` and ``asyncio.gather`` on CorralFutures (local backend): values in call
order, the call's own exception type in the awaiting coroutine, and what cancelling the
awaiting task does (it cancels a call no element took; a running call runs on).
The same gather is proven on real SLURM in tests/slurm/test_node_setup_slurm.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import corral
from corral import JobState


class Refused(Exception):
    """The call's own exception type, which must reach the awaiting coroutine as itself."""


def square(x: int) -> int:
    return x * x


def refuse(x: int) -> int:
    raise Refused(f"no {x}")


def wait_for_file(path: str, value: int) -> int:
    while not Path(path).exists():
        time.sleep(0.02)
    return value


def test_gather_of_100_awaited_futures_gives_values_in_order(make_executor) -> None:
    ex = make_executor("local")

    async def main() -> list[int]:
        return await asyncio.gather(*(ex.submit(square, i) for i in range(100)))

    assert asyncio.run(main()) == [i * i for i in range(100)]


def test_a_failing_call_raises_its_own_exception_in_the_coroutine(make_executor) -> None:
    ex = make_executor("local")

    async def main() -> tuple[int, BaseException | int]:
        good = await ex.submit(square, 3)
        try:
            return good, await ex.submit(refuse, 7)
        except Refused as exc:
            return good, exc

    good, error = asyncio.run(main())
    assert good == 9
    assert type(error) is Refused and str(error) == "no 7"
    assert isinstance(error.__cause__, corral.RemoteTraceback)  # the node's traceback rides along


def test_gather_with_return_exceptions_keeps_order_and_types(make_executor) -> None:
    ex = make_executor("local")

    async def main() -> list[object]:
        calls = [ex.submit(refuse if i % 3 == 0 else square, i) for i in range(9)]
        return await asyncio.gather(*calls, return_exceptions=True)

    found = asyncio.run(main())
    assert [type(v) is Refused if i % 3 == 0 else v == i * i for i, v in enumerate(found)] == [True] * 9


def test_cancelling_the_awaiting_task_cancels_a_call_not_yet_started(make_executor, tmp_path: Path) -> None:
    gate = str(tmp_path / "gate")
    ex = make_executor("local", max_workers=1)  # the second call waits for the first's slot
    first = ex.submit(wait_for_file, gate, 1)
    second = ex.submit(square, 5)

    async def main() -> None:
        task = asyncio.ensure_future(_awaiting(second))
        await asyncio.sleep(0)  # the task starts awaiting
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert second.cancelled() and second.state is JobState.CANCELLED
    Path(gate).touch()
    assert first.result(timeout=60) == 1  # the engine goes on: the call before it completes,
    assert ex.submit(square, 6).result(timeout=60) == 36  # and later calls run


def test_cancelling_the_awaiting_task_leaves_a_running_call_running(make_executor, tmp_path: Path) -> None:
    gate = str(tmp_path / "gate")
    ex = make_executor("local")
    running = ex.submit(wait_for_file, gate, 2)

    async def main() -> None:
        while running.state is not JobState.RUNNING:  # an element took it
            await asyncio.sleep(0.05)
        task = asyncio.ensure_future(_awaiting(running))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert not running.cancelled()
    Path(gate).touch()
    assert running.result(timeout=60) == 2  # it ran on; its value is still there for result()


async def _awaiting(future: corral.CorralFuture[int]) -> int:
    return await future
