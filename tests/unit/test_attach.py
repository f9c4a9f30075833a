"""corral.attach on the local backend: a new process rebuilds a batch's futures from its
folder. The same on real SLURM, with the client SIGKILLed mid-map, is in tests/faults/."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import corral

CLIENT = textwrap.dedent(
    """
    import os, sys, time
    import corral

    def mark(folder, x):
        time.sleep(0.2)
        with open(os.path.join(folder, f"{x}.{os.getpid()}"), "w"):
            pass
        return x * x

    if __name__ == "__main__":
        folder, work = sys.argv[1:3]
        ex = corral.Executor(backend="local", directory=work)
        futures = list(ex.map(mark, [folder] * 40, range(40)))  # never reached: killed first
    """
)


def runs(folder: Path) -> collections.Counter[int]:
    return collections.Counter(int(name.split(".")[0]) for name in os.listdir(folder))


def kill_client_midway(tmp_path: Path, after: int) -> tuple[Path, Path, collections.Counter[int]]:
    """Run the client, SIGKILL it once ``after`` calls finished; the marks made by then."""
    script, folder, work = tmp_path / "client.py", tmp_path / "marks", tmp_path / "work"
    script.write_text(CLIENT)
    folder.mkdir()
    client = subprocess.Popen([sys.executable, str(script), str(folder), str(work)])
    try:
        deadline = time.monotonic() + 60
        while len(os.listdir(folder)) < after:
            assert time.monotonic() < deadline and client.poll() is None, "the client did not get going"
            time.sleep(0.02)
        before = runs(folder)
    finally:
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=30)
    return folder, work, before


def test_attach_after_the_client_was_killed_returns_everything_and_reruns_nothing_finished(
    tmp_path: Path,
) -> None:
    folder, work, before = kill_client_midway(tmp_path, after=10)
    (batch,) = os.listdir(work)
    attached = corral.attach(batch[:6], directory=str(work))  # a unique prefix is enough
    assert attached.name == batch and len(attached) == 40
    assert attached.results(timeout=120) == [x * x for x in range(40)]
    after = runs(folder)
    assert sorted(after) == list(range(40))
    assert all(after[call] == 1 for call in before)  # finished before the kill: ran once
    # The elements outlived the client, and attach let them finish their calls: none ran twice.
    assert max(after.values()) == 1


def test_attaching_to_a_finished_batch_reads_it_and_submits_nothing(make_executor, workdir: str) -> None:
    ex = make_executor("local")
    futures = ex.map(pow, [2, 3, "x"], [3, 2, 1])
    with pytest.raises(TypeError):
        list(futures)
    (name,) = os.listdir(workdir)
    subs = sorted(os.listdir(Path(workdir) / name / "subs"))
    attached = corral.attach(str(Path(workdir) / name))
    assert attached.wait(timeout=30)
    assert [f.result() for f in attached.futures[:2]] == [8, 9]
    with pytest.raises(TypeError, match="unsupported operand"):  # the call's own exception type
        attached.results(timeout=30)
    assert sorted(os.listdir(Path(workdir) / name / "subs")) == subs
    assert "3 of 3 calls ended" in repr(attached)


def test_a_call_that_failed_for_its_job_fails_again_the_same_way(make_executor, workdir: str) -> None:
    ex = make_executor("local", time="0:01", max_retries=0)
    future = ex.submit(time.sleep, 30)
    with pytest.raises(corral.JobTimeoutError):
        future.result(timeout=60)
    attached = corral.attach(future.batch, directory=workdir)
    with pytest.raises(corral.JobTimeoutError, match="ended TIMEOUT"):
        attached.results(timeout=30)


def test_attach_names_what_it_cannot_find(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    with pytest.raises(corral.CorralError, match="no batch 'nothing'"):
        corral.attach("nothing", directory=str(tmp_path / "work"))


def test_calls_cancelled_before_stay_cancelled(make_executor, workdir: str, monkeypatch) -> None:
    monkeypatch.setenv("CORRAL_LOCAL_SLOTS", "1")
    ex = make_executor("local")
    futures = ex._submit(time.sleep, [((1.0,), {})] * 3, 1)  # one element per call, one at a time
    assert futures[1].cancel() and futures[2].cancel()
    assert futures[0].result(timeout=60) is None
    attached = corral.attach(futures[0].batch, directory=workdir)
    assert attached.wait(timeout=30)
    assert [f.cancelled() for f in attached.futures] == [False, True, True]
    assert attached.futures[0].result() is None
