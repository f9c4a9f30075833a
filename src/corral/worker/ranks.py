"""One call on every task of a job (``per_task``), and :func:`task_info` for the code it runs.

The worker runs each call of a ``per_task`` batch through :class:`PerTask`: it writes the
call's arguments into a private folder of the batch (``ranks/<element>.<n>/input``), then
starts ``python -m corral.worker.ranks BATCH_DIR FOLDER`` on every task, as the plan's
:class:`~corral.store.protocol.Ranks` says: once under ``srun``, which starts every task of
the allocation, or once per task by the worker itself (the local backend). Each rank loads
the batch's function, runs it, and writes ``rank-<r>``: its value, or its exception and
traceback. A rank whose call raised exits 1, so that ``srun --kill-on-bad-exit`` ends the
others, which would otherwise wait for it in their next collective operation.

The call's value is rank 0's, or with ``gather`` the list of every rank's in rank order. If a
rank raised, the call raises that exception (the lowest such rank's), its cause naming the
rank and holding its traceback; a rank that wrote nothing is a RuntimeError naming it.
"""

from __future__ import annotations

import itertools
import os
import pickle
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import cloudpickle

from ..store.batch import BatchStore
from ..store.protocol import Ranks
from ..transports.local import LocalTransport
from .calls import unpack_function

RANK_ENV, SIZE_ENV, LOCAL_ENV, NODE_ENV = (
    "CORRAL_TASK_RANK", "CORRAL_TASK_COUNT", "CORRAL_TASK_LOCAL_RANK", "CORRAL_TASK_NODE",
)  # fmt: skip
_counter = itertools.count()


@dataclass(frozen=True)
class TaskInfo:
    """Which task of its job a call runs on: ``rank`` of ``size`` (0-based, over all nodes),
    ``local_rank`` among the tasks of its node, and the node's name. Outside a ``per_task``
    call: rank 0 of 1."""

    rank: int
    size: int
    local_rank: int
    node: str


def task_info() -> TaskInfo:
    """The task this code runs on (see :class:`TaskInfo`)."""
    env = os.environ
    return TaskInfo(
        rank=int(env.get(RANK_ENV, "0")), size=int(env.get(SIZE_ENV, "1")),
        local_rank=int(env.get(LOCAL_ENV, "0")), node=env.get(NODE_ENV) or os.uname().nodename,
    )  # fmt: skip


class RankFailure(Exception):
    """Where a rank's exception came from: the rank, its node and its traceback."""


class PerTask:
    """The callable the worker runs in place of the batch's function for a ``per_task``
    plan: each call runs on every task (module doc)."""

    def __init__(self, ranks: Ranks, store: BatchStore, element: str) -> None:
        self.ranks, self.store, self.element = ranks, store, element

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        folder = os.path.join(self.store.path, "ranks", f"{self.element}.{next(_counter)}")
        shutil.rmtree(folder, ignore_errors=True)  # a requeued element's first run left it
        transport = LocalTransport()
        transport.makedirs(folder)
        try:
            transport.write_bytes(os.path.join(folder, "input"), cloudpickle.dumps((args, kwargs)))
            tail = ["-m", "corral.worker.ranks", self.store.path, folder, *self.ranks.names]
            code = _start(list(self.ranks.argv) + tail, self.ranks.count)
            return _gather(transport, folder, self.ranks, code)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _start(argv: list[str], count: int | None) -> int:
    """Run the ranks; their exit code (the first non-zero one when the worker starts them)."""
    if count is None:
        return subprocess.run(argv, check=False).returncode
    procs = []
    for rank in range(count):
        env = {**os.environ, RANK_ENV: str(rank), SIZE_ENV: str(count), LOCAL_ENV: str(rank)}
        procs.append(subprocess.Popen(argv, env=env))
    code = 0
    try:
        while any(p.poll() is None for p in procs):
            failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
            if failed:  # as srun --kill-on-bad-exit: the others would wait for it forever
                code = code or failed[0]
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
            time.sleep(0.02)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    return code or next((p.returncode for p in procs if p.returncode), 0)


def _gather(transport: LocalTransport, folder: str, ranks: Ranks, code: int) -> Any:
    names = [n for n in transport.listdir(folder) if n.startswith("rank-")]
    outcomes: dict[int, tuple[bool, Any, str, str, int]] = {}
    for name in names:
        number = name.removeprefix("rank-")
        if number.isdigit():
            outcomes[int(number)] = cloudpickle.loads(transport.read_private(os.path.join(folder, name)))
    # How many ranks there were: as the worker started them, or as srun told each of them
    size = ranks.count or max((o[4] for o in outcomes.values()), default=1)
    for rank in sorted(outcomes):
        ok, value, node, tb, _ = outcomes[rank]
        if not ok:
            raise value from RankFailure(f"rank {rank} of {size} on {node} raised:\n{tb}")
    missing = [r for r in range(size) if r not in outcomes]
    if missing:
        raise RuntimeError(
            f"rank {missing[0]} of {size} wrote no result; the ranks ended with exit code {code} "
            "(their output is in the element's error log)"
        )
    values = [outcomes[r][1] for r in range(size)]
    return values if ranks.gather else values[0]


def _rank_main(batch_dir: str, folder: str, names: list[str]) -> int:
    """One rank (module doc): run the batch's function on the call in ``folder``. ``names``:
    the launcher's variables for the rank, the size, the local rank and the node (see
    :class:`~corral.store.protocol.Ranks`), else the worker set corral's own."""
    env = os.environ
    ours = (RANK_ENV, SIZE_ENV, LOCAL_ENV, NODE_ENV)
    for mine, theirs in zip(ours, names or ours, strict=True):
        env[mine] = env.get(theirs, "")
    rank, size = int(env[RANK_ENV] or "0"), int(env[SIZE_ENV] or "1")
    node = env[NODE_ENV] = env[NODE_ENV] or os.uname().nodename
    env[RANK_ENV], env[SIZE_ENV], env[LOCAL_ENV] = str(rank), str(size), env[LOCAL_ENV] or "0"
    transport = LocalTransport()
    store = BatchStore(batch_dir, transport)
    try:
        fn = unpack_function(store.read_function())
        args, kwargs = pickle.loads(transport.read_private(os.path.join(folder, "input")))
        outcome: tuple[bool, Any, str, str, int] = (True, fn(*args, **kwargs), node, "", size)
    except BaseException as exc:  # noqa: BLE001 - every failure of the call is its outcome
        import traceback

        outcome = (False, exc, node, traceback.format_exc(), size)
    try:
        data = cloudpickle.dumps(outcome)
    except Exception as exc:  # noqa: BLE001 - the value (or exception) does not pickle
        data = cloudpickle.dumps(
            (False, RuntimeError(f"rank {rank}: cannot pickle its outcome: {exc}"), node, "", size)
        )
    transport.write_bytes(os.path.join(folder, f"rank-{rank}"), data)
    return 0 if outcome[0] else 1


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(_rank_main(sys.argv[1], sys.argv[2], sys.argv[3:]))
