"""``echo=True``: what the calls print reaches the client's own stdout and stderr while they
run, each line once, prefixed with its call's index (local backend; the SLURM test is in
tests/slurm/test_echo_slurm.py)."""

from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path

import pytest

import corral


def chatty(i: int, gate: str) -> int:
    print(f"first line of {i}", flush=True)
    print(f"to stderr from {i}", file=sys.stderr, flush=True)
    while not Path(gate).exists():
        time.sleep(0.02)
    print(f"two\nlines of {i}")
    print(f"no newline at the end of {i}", end="")
    return i


def test_lines_arrive_while_the_call_runs_each_once_with_its_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gate = tmp_path / "gate"
    # Two calls: the local backend runs as many at once as there are CPUs, and CI has two.
    with corral.Executor("local", str(tmp_path / "work"), max_workers=2, echo=True, progress=False) as ex:
        futures = [ex.submit(chatty, i, str(gate)) for i in range(2)]
        seen, seen_err = "", ""
        deadline = time.monotonic() + 60
        while seen.count("first line of") < 2:  # the calls wait for the gate: they still run
            assert time.monotonic() < deadline, f"no echo while the calls ran: {seen!r}"
            time.sleep(0.05)
            out, err = capsys.readouterr()
            seen, seen_err = seen + out, seen_err + err
        assert not any(f.done() for f in futures)
        gate.touch()
        assert [f.result() for f in futures] == [0, 1]
    out, err = capsys.readouterr()
    out, err = seen + out, seen_err + err
    for i in range(2):
        mine = [line for line in out.splitlines() if line.startswith(f"[call {i}] ")]
        assert mine == [
            f"[call {i}] first line of {i}", f"[call {i}] two", f"[call {i}] lines of {i}",
            f"[call {i}] no newline at the end of {i}",
        ]  # fmt: skip
        assert f"[call {i}] to stderr from {i}" in err.splitlines()
    assert all(re.match(r"\[call \d\] ", line) for line in out.splitlines())


def test_the_pool_echoes_by_default_and_the_executor_does_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    with corral.Executor("local", str(tmp_path), progress=False) as ex:
        assert list(ex.map(chatty, [7], [str(gate)])) == [7]
    assert capsys.readouterr().out == ""
    with corral.Pool(2, backend="local", directory=str(tmp_path), progress=False) as pool:
        assert pool.starmap(chatty, [(5, str(gate))]) == [5]
    assert "[call 0] first line of 5" in capsys.readouterr().out
    with corral.Pool(2, backend="local", directory=str(tmp_path), progress=False, echo=False) as pool:
        assert pool.starmap(chatty, [(5, str(gate))]) == [5]
    assert capsys.readouterr().out == ""


def test_a_bad_echo_value_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="echo must be True or False"):
        corral.Executor("local", str(tmp_path), echo="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="echo must be True or False"):
        corral.Pool(backend="local", directory=str(tmp_path), echo=1)  # type: ignore[arg-type]


def many_lines(i: int) -> int:
    for n in range(200):
        print(f"{i}:{n}")
    return i


def test_packed_calls_keep_their_own_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Many calls per element, each printing 200 lines: every line reaches the client once,
    under the call that printed it, in order."""
    with corral.Executor("local", str(tmp_path), max_workers=2, echo=True, progress=False) as ex:
        assert list(ex.map(many_lines, range(30))) == list(range(30))
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 30 * 200
    for i in range(30):
        assert [line for line in out if line.startswith(f"[call {i}] ")] == [
            f"[call {i}] {i}:{n}" for n in range(200)
        ]


def test_a_sink_that_blocks_holds_no_engine_lock_and_lines_still_come_before_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lines are handed over outside the engine's lock: while a stdout blocks (a pipe
    nobody reads), a submit still goes through; once it flows, each call's lines
    come before its result."""
    from corral.frontends import executor as executor_module

    entered, release = threading.Event(), threading.Event()
    shown: list[object] = []

    def blocking_sink(call: int, stream: str, line: str) -> None:
        entered.set()
        assert release.wait(60)
        shown.append((call, line))

    monkeypatch.setattr(executor_module, "echo_line", blocking_sink)
    with corral.Executor("local", str(tmp_path / "work"), max_workers=2, echo=True, progress=False) as ex:
        first = ex.submit(print, "hello from 0")
        first.add_done_callback(lambda _: shown.append("first done"))
        assert entered.wait(60), "no line reached the sink"
        later: list[corral.CorralFuture[None]] = []
        submitting = threading.Thread(target=lambda: later.append(ex.submit(time.sleep, 0.1)))
        submitting.start()
        submitting.join(10)
        assert not submitting.is_alive(), "submit waited for a blocked stdout"
        release.set()
        assert first.result(timeout=60) is None and later[0].result(timeout=60) is None
    assert shown.index((0, "hello from 0")) < shown.index("first done")
