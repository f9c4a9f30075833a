"""Faults around the jobs, on the real SLURM test cluster: the client killed mid-map, the
controller away, outcome files that show up late. Each test checks that no call is lost
and none completed twice (tests/faults/ledger.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import corral
from corral.engine.policy import PollPolicy
from corral.store.streams import Result, Results, StreamReader

from ..slurm.helpers import ROOT, cluster, wait_for
from .ledger import assert_each_completed_once, completions, mark

QUICK = PollPolicy(scheduler_min=0.5, scheduler_max=2.0)


def test_a_client_killed_halfway_is_replaced_by_attach_and_nothing_finished_runs_again(
    tmp_path: Path,
) -> None:
    folder, work = tmp_path / "done", tmp_path / "work"
    folder.mkdir()
    client = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.client", str(folder), str(work), "300", "0.2"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: len(os.listdir(folder)) >= 150 or client.poll() is not None, 300, "150 calls")
        assert client.poll() is None, "the client ended on its own"
    finally:
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=30)
    finished_before = completions(str(folder))
    assert 150 <= len(finished_before) < 300
    (batch,) = os.listdir(work)
    attached = corral.attach(batch, directory=str(work))  # in this process: a new client
    assert attached.results(timeout=600) == [x * 10 for x in range(300)]
    assert_each_completed_once(str(folder), 300)  # those finished before the kill included
    assert (
        corral.store.records.summarize(attached.path).counts[corral.store.records.CallStatus.COMPLETED] == 300
    )


def test_the_controller_stopped_for_30_s_mid_map_fails_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "done"
    folder.mkdir()
    ex = corral.Executor(
        cluster=corral.Cluster(corral.get_backend("slurm"), str(tmp_path / "w"), policy=QUICK)
    )
    # ~50 s of work on 8 slots: slurmctld goes away for 30 s and comes back mid-map
    futures = ex._submit(mark, [((str(folder), x, 1.0), {}) for x in range(400)], None)  # map's futures
    wait_for(lambda: len(os.listdir(folder)) >= 16, 120, "the map to get going")
    cluster("stop-ctld")
    try:
        time.sleep(30)
        assert not any(f.done() and f.exception() for f in futures)
    finally:
        cluster("start-ctld")
    assert [f.result(timeout=600) for f in futures] == [x * 10 for x in range(400)]
    assert_each_completed_once(str(folder), 400)


def test_stream_records_that_appear_5_s_late_cause_no_failure(tmp_path: Path, monkeypatch) -> None:
    folder, delayed, work = tmp_path / "done", tmp_path / "delayed", tmp_path / "w"
    folder.mkdir()
    delayed.mkdir()
    # The jobs (which inherit this environment, and this corral) append their stream records
    # to side files in `delayed`; a mover appends each record to its element's real stream
    # five seconds later, as a slow shared filesystem would show them: the Results and End
    # of an element appear after it has ended.
    here = Path(corral.__file__).resolve().parents[1]
    monkeypatch.setenv("PYTHONPATH", f"{Path(__file__).parent / 'inject'}:{here}:{ROOT}")
    monkeypatch.setenv("CORRAL_FAULT_STREAM_DIR", str(delayed))
    moved: list[float] = []  # how long each moved piece waited
    stop = threading.Event()
    grown: dict[str, list[tuple[int, float]]] = {}  # side file -> (size seen, when), in order
    copied: dict[str, int] = {}

    def move(name: str, now: float) -> None:
        side = delayed / name
        sizes = grown.setdefault(name, [])
        size = side.stat().st_size
        if not sizes or size > sizes[-1][0]:
            sizes.append((size, now))
        due = [(s, t) for s, t in sizes if now - t >= 5 and s > copied.get(name, 0)]
        if not due:
            return
        end, when = due[-1]
        start = copied.get(name, 0)
        batch, _, element = name.partition("~")
        with open(side, "rb") as source:
            source.seek(start)
            data = source.read(end - start)
        real = os.open(work / batch / "streams" / element, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(real, data)
        finally:
            os.close(real)
        copied[name] = end
        moved.extend(now - t for s, t in due)

    def mover() -> None:
        while not stop.wait(0.1):
            for name in os.listdir(delayed):
                if name.endswith(".log") and "~" in name:
                    move(name, time.monotonic())

    thread = threading.Thread(target=mover, daemon=True)
    thread.start()
    try:
        ex = corral.Executor(cluster=corral.Cluster(corral.get_backend("slurm"), str(work), policy=QUICK))
        results = list(ex.map(mark, [str(folder)] * 16, range(16), [0.5] * 16, chunksize=1))
    finally:
        stop.set()
        thread.join(timeout=30)
    assert results == [x * 10 for x in range(16)]
    assert moved and min(moved) >= 5  # nothing the client read came early
    (batch,) = os.listdir(work)
    streams = work / batch / "streams"
    records = [item for log in streams.glob("*.log") for item in whole_stream(log.read_bytes())]
    ended = sum(
        1 if isinstance(r, Result) else len(r.calls) if isinstance(r, Results) else 0 for r in records
    )
    assert ended == 16  # every call's result went the slow way
    assert os.listdir(work / batch / "attempts") == []  # no call was given up on or retried
    assert_each_completed_once(str(folder), 16)


def whole_stream(data: bytes) -> list[object]:
    reader = StreamReader()
    return [item for _, item in reader.feed(data) + reader.finish()]
