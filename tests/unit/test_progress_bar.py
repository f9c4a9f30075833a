"""The progress bar of map, Pool, as_completed and `corral status --watch`, drawn on a real
pseudo-terminal by a real script on the local backend: its last counts are the calls' real
outcome (a failure and a retry among them); without a terminal nothing is drawn."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import corral
from corral.engine.ledger_values import Counts
from corral.engine.tally import Tally
from corral.frontends.progress_bar import ProgressBar, describe, summary, wanted

#: The end of a bar's line: what the bar counted ended, and the counts beside it.
BAR = re.compile(r"(\d+)/(\d+) \[[^\]]*?, ((?:\d+ \w+(?: · )?)+)\]")

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    import corral
    from corral.store import records

    HERE = sys.argv[1]

    def f(i):
        time.sleep(0.05)
        if i == 11:
            raise KeyError("eleven")
        if i == 4 and not os.path.exists(os.path.join(HERE, "retried")):
            open(os.path.join(HERE, "retried"), "w").close()
            raise ValueError("the first time only")
        return i

    if __name__ == "__main__":
        front = sys.argv[2]
        with corral.Executor("local", os.path.join(HERE, "work"), max_workers=2, retry_on=ValueError) as ex:
            if front in ("map", "forced"):
                try:
                    list(ex.map(f, range(12), progress=True if front == "forced" else None))
                except KeyError:
                    pass
            elif front == "as_completed":
                list(corral.as_completed([ex.submit(f, i) for i in range(12)]))
        if front == "imap":
            with corral.Pool(2, backend="local", directory=os.path.join(HERE, "work")) as pool:
                list(pool.imap_unordered(abs, range(-6, 6)))
        (path,) = records.list_batches(os.path.join(HERE, "work"))
        s = records.summarize(path)
        print(json.dumps({k.value: n for k, n in s.counts.items()}), file=sys.stderr)
    """
)


def on_terminal(
    argv: list[str], *, until: Callable[[str], bool] | None = None, then: Callable[[], None] | None = None
) -> str:
    """Run ``argv`` with a pseudo-terminal of 160 columns as its stdin, stdout and stderr;
    what it wrote, once it exited. ``then`` runs once the output so far satisfies ``until``."""
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(argv, stdin=child, stdout=child, stderr=child, close_fds=True)
    os.close(child)
    out = b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([parent], [], [], 1)
            if ready:
                try:
                    data = os.read(parent, 65536)
                except OSError:  # the child closed the terminal: it exited
                    break
                if not data:
                    break
                out += data
                if until is not None and then is not None and until(out.decode(errors="replace")):
                    then()
                    until = None
    finally:
        os.close(parent)
        proc.wait(timeout=60)
    return out.decode(errors="replace")


def last_bar(text: str) -> tuple[int, int, dict[str, int]]:
    """The counts of the last bar drawn: (ended, total, {word: count})."""
    found = BAR.findall(text.replace("\r", "\n"))
    assert found, f"no progress bar in {text[-2000:]!r}"
    ended, total, counts = found[-1]
    return int(ended), int(total), {w: int(n) for n, w in re.findall(r"(\d+) (\w+)", counts)}


def outcome(text: str) -> dict[str, int]:
    """The counts the batch folder holds, as the script printed them last."""
    line = [x for x in text.replace("\r", "\n").splitlines() if x.startswith("{")][-1]
    return {k: v for k, v in json.loads(line).items() if v}


@pytest.mark.parametrize("front", ["map", "as_completed"])
def test_the_bars_last_counts_are_the_real_outcome(tmp_path: Path, front: str) -> None:
    text = on_terminal([sys.executable, "-c", SCRIPT, str(tmp_path), front])
    ended, total, counts = last_bar(text)
    assert (ended, total) == (12, 12)
    assert counts == {"done": 11, "running": 0, "pending": 0, "failed": 1, "retried": 1}
    assert outcome(text) == {"completed": 11, "failed": 1}
    assert "%|" in text and "calls/s" in text  # a bar, with its rate


def test_the_pools_imap_draws_its_bar(tmp_path: Path) -> None:
    text = on_terminal([sys.executable, "-c", SCRIPT, str(tmp_path), "imap"])
    assert last_bar(text) == (12, 12, {"done": 12, "running": 0, "pending": 0})


def test_no_bar_without_a_terminal_unless_forced(tmp_path: Path) -> None:
    for front, drawn in (("map", False), ("forced", True)):
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(tmp_path / front), front],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert ("%|" in proc.stderr) is drawn, proc.stderr
        if drawn:
            assert last_bar(proc.stderr)[2]["failed"] == 1


def test_status_watch_redraws_a_changing_count(tmp_path: Path) -> None:
    """Six calls end at once, six wait for a gate the test opens once the watch drew its
    first bar: the watch shows 6 ended, then 12, and returns by itself."""
    gate = tmp_path / "gate"
    script = textwrap.dedent(
        f"""
        import os, time, corral
        def f(i):
            while i >= 6 and not os.path.exists({str(gate)!r}):
                time.sleep(0.05)
            return i
        with corral.Executor("local", {str(tmp_path / "work")!r}, max_workers=8) as ex:
            list(ex.map(f, range(12), progress=False))
        """
    )
    running = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _ended_in(tmp_path / "work") >= 6)
        text = on_terminal(
            [sys.executable, "-m", "corral", "status", "--dir", str(tmp_path / "work"), "--watch", "0.2"],
            until=lambda out: BAR.search(out) is not None,
            then=gate.touch,
        )
    finally:
        gate.touch()
        running.wait(timeout=60)
    seen = [int(ended) for ended, _, _ in BAR.findall(text.replace("\r", "\n"))]
    assert seen[0] == 6 and seen[-1] == 12, seen
    assert last_bar(text)[2] == {"done": 12, "running": 0, "pending": 0}


def test_status_watch_without_a_terminal_prints_each_change(tmp_path: Path) -> None:
    with corral.Executor("local", str(tmp_path), max_workers=2) as ex:
        assert list(ex.map(abs, [-1, -2, -3], progress=False)) == [1, 2, 3]
    proc = subprocess.run(
        [sys.executable, "-m", "corral", "status", "--dir", str(tmp_path), "--watch", "0.1"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "every call of every batch has ended: nothing to watch\n"
    (path,) = _batches(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "corral", "status", os.path.basename(path), "--dir", str(tmp_path), "--watch"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith(": 3/3 ended: 3 done · 0 running · 0 pending\n"), proc.stdout


def _batches(root: Path) -> list[str]:
    from corral.store import records

    return records.list_batches(str(root))


def _ended_in(root: Path) -> int:
    from corral.cli.watching import tally
    from corral.engine.tally import ended

    paths = _batches(root) if root.exists() else []
    return ended(tally(paths[0])) if paths else 0


def _wait_for(condition: Callable[[], bool], limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.05)


# -- the pieces ---------------------------------------------------------------------------------


def test_the_counts_line() -> None:
    counts = Counts(pending=579, running=8, done=409, failed=3, cancelled=0, retried=2)
    assert describe(counts) == "409 done · 8 running · 579 pending · 3 failed · 2 retried"
    assert summary(counts, 999) == "412/999 ended: 409 done · 8 running · 579 pending · 3 failed · 2 retried"


def test_a_bad_progress_value_fails_before_anything_is_submitted(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="progress must be True, False or None"):
        corral.Executor("local", str(tmp_path), progress="yes")  # type: ignore[arg-type]
    with corral.Executor("local", str(tmp_path)) as ex:
        with pytest.raises(TypeError, match="progress must be"):
            ex.map(abs, [1], progress=1)  # type: ignore[arg-type]
    assert _batches(tmp_path) == []
    assert wanted(True) and not wanted(False)


def test_a_tally_counts_a_whole_batch_and_part_of_one(tmp_path: Path) -> None:
    with corral.Executor("local", str(tmp_path), max_workers=2) as ex:
        futures = [ex.submit(abs, -i) for i in range(6)]
        assert [f.result() for f in futures] == list(range(6))
        whole, part = Tally(futures=futures), Tally(futures=futures[:2])
        assert whole.counts() == Counts(0, 0, 6, 0, 0, 0)
        assert part.counts() == Counts(0, 0, 2, 0, 0, 0)
        assert whole.total == 6 and part.total == 2


def test_a_bar_that_is_not_drawn_costs_no_looks() -> None:
    looks: list[int] = []

    def count() -> Counts:
        looks.append(1)
        return Counts(1, 0, 0, 0, 0, 0)

    bar = ProgressBar("f", 1, count, False)
    assert not bar.active and bar.refresh(now=True) is None
    bar.close()
    assert looks == []
