"""What the client shows of a batch on the real SLURM cluster: the progress bar on a
pseudo-terminal (its last counts are the real outcome, a failure and a retry among them),
``corral status --watch``, and ``echo=True`` lines arriving while their call still runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ..unit.test_progress_bar import BAR, _ended_in, _wait_for, last_bar, on_terminal, outcome

pytestmark = pytest.mark.usefixtures("fresh_queue")

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    import corral
    from corral.store import records

    HERE = sys.argv[1]

    def f(i):
        time.sleep(0.2)
        if i == 7:
            raise KeyError("seven")
        if i == 2 and not os.path.exists(os.path.join(HERE, "retried")):
            open(os.path.join(HERE, "retried"), "w").close()
            raise ValueError("the first time only")
        return os.environ["SLURMD_NODENAME"]

    if __name__ == "__main__":
        work = os.path.join(HERE, "work")
        with corral.Executor("slurm", work, retry_on=ValueError, time="2:00") as ex:
            try:
                nodes = list(ex.map(f, range(8)))
            except KeyError:
                pass
        (path,) = records.list_batches(work)
        s = records.summarize(path)
        print(json.dumps({k.value: n for k, n in s.counts.items()}), file=sys.stderr)
    """
)


def test_the_bar_on_slurm_ends_with_the_real_outcome(tmp_path: Path) -> None:
    text = on_terminal([sys.executable, "-c", SCRIPT, str(tmp_path)])
    assert last_bar(text) == (8, 8, {"done": 7, "running": 0, "pending": 0, "failed": 1, "retried": 1})
    assert outcome(text) == {"completed": 7, "failed": 1}
    seen = {int(ended) for ended, _, _ in BAR.findall(text.replace("\r", "\n"))}
    assert 0 in seen and 8 in seen  # drawn from the start to the end, not only at the end


def test_status_watch_follows_a_slurm_batch(tmp_path: Path) -> None:
    """A batch of a client in another process: the watch draws it until its calls ended."""
    gate = tmp_path / "gate"
    script = textwrap.dedent(
        f"""
        import os, time, corral
        def f(i):
            while i >= 2 and not os.path.exists({str(gate)!r}):
                time.sleep(0.05)
            return i
        with corral.Executor("slurm", {str(tmp_path / "work")!r}, time="2:00") as ex:
            assert list(ex.map(f, range(4), progress=False)) == [0, 1, 2, 3]
        """
    )
    client = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _ended_in(tmp_path / "work") >= 2, 120)  # two ended, two wait for the gate
        text = on_terminal(
            [sys.executable, "-m", "corral", "status", "--dir", str(tmp_path / "work"), "--watch", "0.3"],
            until=lambda out: BAR.search(out) is not None,
            then=gate.touch,
        )
    finally:
        gate.touch()
        assert client.wait(timeout=120) == 0
    seen = [int(ended) for ended, _, _ in BAR.findall(text.replace("\r", "\n"))]
    assert seen[0] == 2 and seen[-1] == 4, seen
    assert last_bar(text)[2] == {"done": 4, "running": 0, "pending": 0}


def chatty(gate: str) -> str:
    import os

    print(f"started on {os.environ['SLURMD_NODENAME']}", flush=True)
    while not os.path.exists(gate):
        time.sleep(0.05)
    print("finished")
    return "ok"


def test_echo_shows_a_calls_lines_while_it_runs(
    make_executor: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gate = tmp_path / "gate"
    ex = make_executor("slurm", echo=True, progress=False)  # type: ignore[operator]
    future = ex.submit(chatty, str(gate))
    seen = ""
    deadline = time.monotonic() + 120
    while "started on" not in seen:
        assert time.monotonic() < deadline, "the call's first line never reached the client"
        time.sleep(0.05)
        seen += capsys.readouterr().out
    assert not future.done()  # it waits for the gate: the line came while it ran
    gate.touch()
    assert future.result(timeout=120) == "ok"
    seen += capsys.readouterr().out
    echoed = [line for line in seen.splitlines() if line.startswith("[call 0] ")]
    assert echoed == [f"[call 0] {line}" for line in future.stdout().splitlines()]
    assert echoed[-1] == "[call 0] finished"
