"""A poll tick reads the streams of every live batch in ONE transport operation
(Transport.scan_many): over SSH a tick is one request however many batches are live; a batch
folder that fails the trust check fails that batch alone (local backend)."""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

import corral
from corral.errors import UnsafeWorkDirError
from corral.transports.base import Scan
from corral.transports.local import LocalTransport


class Recording(LocalTransport):
    """Records which thread looked at the streams, and at how many folders at once."""

    def __init__(self) -> None:
        super().__init__()
        self.looks: list[tuple[str, str, int]] = []

    def scan(self, folder: str, cursors: Mapping[str, int], also: Sequence[str] = ()) -> dict[str, bytes]:
        # A batch whose element ended with calls not seen ended gets one more look of its own
        # (BatchState.failures): that is not the tick's look.
        why = "failures" if any(f.name == "failures" for f in traceback.extract_stack()) else "scan"
        self.looks.append((threading.current_thread().name, why, 1))
        return super().scan(folder, cursors, also)

    def scan_many(self, scans: Sequence[Scan]) -> list[dict[str, bytes]]:
        self.looks.append((threading.current_thread().name, "scan_many", len(scans)))
        return [LocalTransport.scan(self, folder, cursors, also) for folder, cursors, also in scans]


def gated(gate: str, x: int) -> int:
    while not os.path.exists(gate):
        time.sleep(0.02)
    return x


def test_three_live_batches_are_read_in_one_operation_per_tick(tmp_path: Path) -> None:
    transport = Recording()
    gate = tmp_path / "gate"
    cluster = corral.Cluster(corral.get_backend("local", transport), str(tmp_path / "work"))
    with corral.Pool(cluster=cluster, processes=2, progress=False, echo=False) as pool:
        results = [pool.starmap_async(gated, [(str(gate), x) for x in range(2)]) for _ in range(3)]
        time.sleep(1.0)  # the three batches are live (their calls wait on the gate): ticks pass
        gate.touch()
        assert [r.get(timeout=60) for r in results] == [[0, 1]] * 3
    poll = [(op, n) for thread, op, n in transport.looks if thread == "corral-poll"]
    assert ("scan_many", 3) in poll, poll
    # While three were live, no tick looked at them one by one: a tick's single scan comes
    # only once one batch is left.
    first_many = poll.index(("scan_many", 3))
    last_many = len(poll) - 1 - poll[::-1].index(("scan_many", 3))
    assert ("scan", 1) not in poll[first_many:last_many], poll


def test_a_batch_folder_that_fails_the_trust_check_fails_that_batch_alone(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    cluster = corral.Cluster(corral.get_backend("local"), str(tmp_path / "work"))
    with corral.Executor(cluster=cluster, max_workers=2, progress=False) as ex:
        futures = []
        for x in range(2):
            with ex.batch():  # two batches, both live while their calls wait on the gate
                futures.append(ex.submit(gated, str(gate), x))
        planted, fine = futures
        assert planted.batch != fine.batch
        foreign = tmp_path / "work" / str(planted.batch) / "streams" / "X_9.log"
        foreign.write_bytes(b"forged")  # a stream others could write to
        os.chmod(foreign, 0o622)
        gate.touch()
        with pytest.raises(UnsafeWorkDirError):
            planted.result(timeout=60)
        assert fine.result(timeout=60) == 1
