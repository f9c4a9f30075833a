"""The worker on its own (format 2): one stream and one out/err pair per element, chunk
claims, restarts, cancels, large results, exit codes, and what a kill mid-write leaves."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from corral.store.batch import BatchStore
from corral.store.frames import Corrupt, scan_frames
from corral.store.protocol import ChunkClaim, Claim, Mode, Requeue, WorkerPlan
from corral.store.stream_codec import Claim as ClaimRecord
from corral.store.streams import (
    RESULT_INLINE_MAX,
    Beat,
    End,
    Item,
    Result,
    Results,
    Skip,
    Start,
    StreamReader,
    StreamWriter,
    read_element_runs,
)
from corral.transports import LocalTransport
from corral.worker.checkpoint import StopSignals
from corral.worker.element_log import RUN_VALUE_MAX
from corral.worker.run import pack_function, run_element

RESTART = "CORRAL_TEST_RESTARTS"


def make_batch(tmp_path: Path, fn: Any, calls: list[Any], plan: WorkerPlan) -> BatchStore:
    store = BatchStore.create(str(tmp_path / "work"), "t", LocalTransport())
    store.write_batch({}, pack_function(fn), [cloudpickle.dumps(c) for c in calls])
    store.write_submission(0, plan, "#!/bin/bash\n")
    return store


def plan_of(mode: Mode, calls: int, **fields: Any) -> WorkerPlan:
    return WorkerPlan(mode=mode, tasks=tuple((c, 0) for c in range(calls)), **fields)


def items(store: BatchStore, element: str) -> list[Item]:
    """The element's records, a run of trivial calls (a Results) as one Result per call."""
    reader = StreamReader()
    found: list[Item] = []
    for _, item in reader.feed(store.read_stream(element)) + reader.finish():
        found.extend(item.each() if type(item) is Results else [item])
    return found


def results(store: BatchStore, element: str) -> dict[int, Result]:
    return {r.call: r for r in items(store, element) if type(r) is Result}


def call_output(store: BatchStore, element: str, call: int) -> tuple[str, str]:
    """A call's own stdout and stderr: from the mark before its Result to its Result."""
    mark = (0, 0)
    for item in items(store, element):
        if type(item) in (Start, ClaimRecord) or (type(item) is Result and item.call != call):
            mark = (item.out, item.err)  # type: ignore[union-attr]
        elif type(item) is Result:
            out = store.read_output(element, "out", mark[0], item.out)
            err = store.read_output(element, "err", mark[1], item.err)
            return out, err
    raise AssertionError(f"no Result for call {call}")


def noisy(x: int) -> int:
    print(f"out {x}")
    os.system(f"echo child {x} >&2")
    if x == 2:
        raise KeyError(x)
    return x + 1


def test_an_element_leaves_one_stream_and_one_output_pair(tmp_path: Path) -> None:
    store = make_batch(tmp_path, noisy, [((i,), {}) for i in range(3)], plan_of(Mode.STATIC, 3, chunk=3))
    assert run_element(store.path, 0, 0, "J_0") == (3, 1, 0)
    assert sorted(os.listdir(os.path.join(store.path, "streams"))) == ["J_0.err", "J_0.log", "J_0.out"]
    assert os.listdir(os.path.join(store.path, "claims")) == ["0.0"]
    assert os.listdir(os.path.join(store.path, "results")) == []
    kinds = [type(item).__name__ for item in items(store, "J_0")]
    assert kinds == ["Start", "Claim", "Result", "Result", "Result", "End"]
    start, claim, *_, end = items(store, "J_0")
    assert isinstance(start, Start) and (start.element, start.run, start.pid) == ("J_0", 0, os.getpid())
    assert claim == ClaimRecord(sub=0, pos=0, n=3, out=0, err=0, t=claim.t)  # type: ignore[union-attr]
    assert isinstance(end, End) and (end.code, end.ran, end.failed) == (0, 3, 1)
    for name in ("J_0.log", "J_0.out", "J_0.err"):
        assert os.stat(os.path.join(store.path, "streams", name)).st_mode & 0o777 == 0o600


def test_outcomes_and_each_calls_own_output(tmp_path: Path) -> None:
    store = make_batch(tmp_path, noisy, [((i,), {}) for i in range(3)], plan_of(Mode.PULL, 3))
    run_element(store.path, 0, 0, "J_0")
    done = results(store, "J_0")
    assert done[1].ok and cloudpickle.loads(done[1].payload) == 2
    assert not done[2].ok and done[2].type_name == "builtins.KeyError"
    assert "raise KeyError(x)" in done[2].traceback
    assert isinstance(cloudpickle.loads(done[2].payload), KeyError)
    assert call_output(store, "J_0", 0) == ("out 0\n", "child 0\n")
    assert call_output(store, "J_0", 1) == ("out 1\n", "child 1\n")
    out, err = call_output(store, "J_0", 2)
    assert out == "out 2\n" and err.startswith("child 2\n") and "KeyError" in err


def test_without_redirection_every_offset_is_zero(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    store = make_batch(tmp_path, noisy, [((0,), {})], plan_of(Mode.STATIC, 1, chunk=1))
    run_element(store.path, 0, 0, "J_0", redirect=False)
    marks = [(i.out, i.err) for i in items(store, "J_0") if type(i) in (Start, ClaimRecord, Result)]
    assert marks == [(0, 0)] * 3
    assert "out 0" in capfd.readouterr().out
    assert not os.path.exists(store.output_path("J_0", "out"))


def test_static_elements_take_their_own_range_only(tmp_path: Path) -> None:
    store = make_batch(tmp_path, abs, [((-i,), {}) for i in range(7)], plan_of(Mode.STATIC, 7, chunk=3))
    assert store.claim_chunk(0, 0, ChunkClaim(Claim.CLIENT_CANCEL, 3))  # the client cancelled element 0
    assert [run_element(store.path, 0, k, f"J_{k}").ran for k in range(4)] == [0, 3, 1, 0]
    assert sorted(results(store, "J_1")) == [3, 4, 5] and sorted(results(store, "J_2")) == [6]
    assert store.chunk_claims(0) == {
        0: ChunkClaim(Claim.CLIENT_CANCEL, 3),
        3: ChunkClaim(Claim("J_1", os.uname().nodename, os.getpid()), 3),
        6: ChunkClaim(Claim("J_2", os.uname().nodename, os.getpid()), 1),
    }


def test_cancelled_calls_are_skipped_not_run(tmp_path: Path) -> None:
    store = make_batch(tmp_path, abs, [((-i,), {}) for i in range(3)], plan_of(Mode.STATIC, 3, chunk=3))
    assert store.mark_cancel(1, 0) and not store.mark_cancel(1, 0)
    assert store.cancel_marks() == {(1, 0)}
    assert run_element(store.path, 0, 0, "J_0").ran == 2
    assert [type(i).__name__ for i in items(store, "J_0")][2:5] == ["Result", "Skip", "Result"]
    assert Skip(call=1, attempt=0, why="cancelled") in items(store, "J_0")


def big(n: int) -> bytes:
    return b"x" * n


def test_a_large_result_lives_in_its_own_file(tmp_path: Path) -> None:
    sizes = [10, RESULT_INLINE_MAX + 1]
    store = make_batch(tmp_path, big, [((n,), {}) for n in sizes], plan_of(Mode.STATIC, 2, chunk=2))
    run_element(store.path, 0, 0, "J_0")
    small, large = results(store, "J_0")[0], results(store, "J_0")[1]
    assert not small.in_file and cloudpickle.loads(small.payload) == b"x" * 10
    assert large.in_file and large.payload == b""
    assert os.listdir(os.path.join(store.path, "results")) == ["1.0.pkl"]
    outcome = store.read_large_result(1, 0)
    assert outcome.ok and cloudpickle.loads(outcome.payload) == b"x" * sizes[1]


@pytest.mark.parametrize(("strict", "code"), [(True, 1), (False, 0)])
def test_a_strict_element_with_a_failed_call_exits_1(tmp_path: Path, strict: bool, code: int) -> None:
    plan = plan_of(Mode.PULL, 3, strict=strict)
    store = make_batch(tmp_path, noisy, [((i,), {}) for i in range(3)], plan)
    assert run_element(store.path, 0, 0, "J_0") == (3, 1, code)
    assert items(store, "J_0")[-1] == End(code=code, ran=3, failed=1, t=items(store, "J_0")[-1].t)  # type: ignore[union-attr]


def written_stream(store: BatchStore, element: str, records: list[Any]) -> None:
    with StreamWriter(store.stream_path(element)) as writer:
        for record in records:
            writer.write(record)


def old_result(call: int, ok: bool = True) -> Result:
    return Result(
        call=call, attempt=0, ok=ok, type_name="", message="", traceback="", host="h", started=1.0,
        finished=2.0, out=0, err=0, in_file=False, payload=cloudpickle.dumps(call),
    )  # fmt: skip


@pytest.mark.parametrize(("restarts", "reran"), [("1", [1, 2, 3, 4]), ("0", [3, 4])])
def test_a_restarted_element_reruns_only_what_it_claimed_and_did_not_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restarts: str, reran: list[int]
) -> None:
    """The plan names the variable that says "this is a rerun" (the backend's)."""
    plan = plan_of(Mode.PULL, 5, restart_env=RESTART)
    store = make_batch(tmp_path, abs, [((-i,), {}) for i in range(5)], plan)
    me = Claim("J_0", "oldhost", 1)
    assert store.claim_chunk(0, 0, ChunkClaim(me, 3))
    start = Start(element="J_0", host="oldhost", pid=1, run=0, out=0, err=0, t=1.0)
    written_stream(store, "J_0", [start, ClaimRecord(sub=0, pos=0, n=3, out=0, err=0, t=1.0), old_result(0)])
    monkeypatch.setenv(RESTART, restarts)
    assert run_element(store.path, 0, 0, "J_0").ran == len(reran)
    new = items(store, "J_0")[3:]
    assert isinstance(new[0], Start) and new[0].run == 1
    assert [i.call for i in new if type(i) is Result] == reran
    assert [(i.pos, i.n) for i in new if type(i) is ClaimRecord] == [(3, 1), (4, 1)]


def test_a_strict_element_remembers_a_failure_from_before_its_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = plan_of(Mode.STATIC, 2, chunk=2, strict=True, restart_env=RESTART)
    store = make_batch(tmp_path, abs, [((-i,), {}) for i in range(2)], plan)
    assert store.claim_chunk(0, 0, ChunkClaim(Claim("J_0", "h", 1), 2))
    start = Start(element="J_0", host="h", pid=1, run=0, out=0, err=0, t=1.0)
    written_stream(
        store, "J_0", [start, ClaimRecord(sub=0, pos=0, n=2, out=0, err=0, t=1.0), old_result(0, False)]
    )
    monkeypatch.setenv(RESTART, "1")
    assert run_element(store.path, 0, 0, "J_0") == (1, 0, 1)


def test_a_warned_element_with_work_left_asks_to_be_requeued_and_finishes_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = plan_of(Mode.PULL, 3, requeue=Requeue(exit_code=99), restart_env=RESTART)
    store = make_batch(tmp_path, abs, [((-i,), {}) for i in range(3)], plan)
    assert run_element(store.path, 0, 0, "J_0", signals=StopSignals(warned=True)) == (0, 0, 99)
    assert items(store, "J_0")[-1] == End(code=99, ran=0, failed=0, t=items(store, "J_0")[-1].t)  # type: ignore[union-attr]
    monkeypatch.setenv(RESTART, "1")
    assert run_element(store.path, 0, 0, "J_0") == (3, 0, 0)
    assert sorted(results(store, "J_0")) == [0, 1, 2]


def test_a_terminated_element_ends_with_143_and_takes_nothing(tmp_path: Path) -> None:
    store = make_batch(tmp_path, abs, [((-1,), {})], plan_of(Mode.PULL, 1))
    assert run_element(store.path, 0, 0, "J_0", signals=StopSignals(terminated=True)) == (0, 0, 143)
    assert store.chunk_claims(0) == {}


def wait_for_a_beat(path: str) -> bool:
    """Called inside a job: returns once the element's stream holds a heartbeat."""
    for _ in range(2000):
        if any(type(item) is Beat for _, item in StreamReader().feed(Path(path).read_bytes())):
            return True
        time.sleep(0.01)
    return False


def test_a_running_element_beats_until_its_end(tmp_path: Path) -> None:
    store = make_batch(tmp_path, wait_for_a_beat, [], plan_of(Mode.STATIC, 1, chunk=1))
    store.write_batch(
        {}, pack_function(wait_for_a_beat), [cloudpickle.dumps(((store.stream_path("J_0"),), {}))]
    )
    run_element(store.path, 0, 0, "J_0", beat=0.02)
    kinds = [type(i).__name__ for i in items(store, "J_0")]
    assert cloudpickle.loads(results(store, "J_0")[0].payload) is True
    assert "Beat" in kinds[: kinds.index("Result")] and kinds[-1] == "End"


def test_unpicklable_exception_and_result_are_reported_as_text(tmp_path: Path) -> None:
    store = make_batch(tmp_path, raise_or_lock, [(("raise",), {}), (("lock",), {})], plan_of(Mode.PULL, 2))
    run_element(store.path, 0, 0, "J_0")
    raised, unpicklable = results(store, "J_0")[0], results(store, "J_0")[1]
    assert (raised.ok, raised.payload, raised.message) == (False, b"", "boom")
    assert not unpicklable.ok and "could not pickle the result" in unpicklable.message
    assert pickle.loads(pickle.dumps(unpicklable)) == unpicklable


class Unpicklable(Exception):
    def __reduce__(self) -> Any:
        raise TypeError("no pickling me")


def raise_or_lock(kind: str) -> Any:
    if kind == "raise":
        raise Unpicklable("boom")
    return threading.Lock()


def test_inputs_are_kept_and_folders_private(tmp_path: Path) -> None:
    store = make_batch(tmp_path, noisy, [((0,), {})], plan_of(Mode.STATIC, 1, chunk=1))
    run_element(store.path, 0, 0, "J_0")
    for name in ("calls.bin", "calls.idx", "function.pkl"):
        assert os.stat(os.path.join(store.path, name)).st_mode & 0o077 == 0
    for folder in ("", "subs", "claims", "cancels", "stops", "streams", "results", "logs"):
        assert os.stat(os.path.join(store.path, folder)).st_mode & 0o777 == 0o700


# -- a kill mid-write ---------------------------------------------------------------------------


def test_a_run_of_quick_calls_is_written_while_a_long_call_after_them_runs(tmp_path: Path) -> None:
    plan = plan_of(Mode.STATIC, 6, chunk=6)
    store = make_batch(tmp_path, time.sleep, [((0,), {})] * 5 + [((5,), {})], plan)
    thread = threading.Thread(target=run_element, args=(store.path, 0, 0, "J_0"), kwargs={"redirect": False})
    thread.start()
    deadline = time.monotonic() + 3
    while len(results(store, "J_0")) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(results(store, "J_0")) == [0, 1, 2, 3, 4] and thread.is_alive()
    assert sum(type(item) is Results for _, item in StreamReader().feed(store.read_stream("J_0"))) == 1
    thread.join(timeout=30)
    assert sorted(results(store, "J_0")) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("records", ["one per call", "one run"])
def test_a_torn_record_is_cut_and_its_call_rerun_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, records: str
) -> None:
    """A copy of a stream cut inside the third record after the Claim, as a kill mid-write
    leaves it: values above RUN_VALUE_MAX get a Result each (the cut is in call 2's), small
    ones share one Results (the cut is in it: all four calls run again)."""
    plan = plan_of(Mode.STATIC, 4, chunk=4, restart_env=RESTART)
    fn, size = (bytes, RUN_VALUE_MAX + 1) if records == "one per call" else (abs, 0)
    calls = [((size + i,), {}) for i in range(4)]
    whole = make_batch(tmp_path / "whole", fn, calls, plan)
    run_element(whole.path, 0, 0, "J_0")
    data = Path(whole.stream_path("J_0")).read_bytes()
    frames, _ = scan_frames(data)
    cut = 4 if records == "one per call" else 2  # Start, Claim, Result 0, Result 1 | Start, Claim
    torn = data[: frames[cut].offset + 15]
    store = make_batch(tmp_path / "torn", fn, calls, plan)
    assert store.claim_chunk(0, 0, ChunkClaim(Claim("J_0", "h", 1), 4))
    Path(store.stream_path("J_0")).write_bytes(torn)
    os.chmod(store.stream_path("J_0"), 0o600)
    before = read_element_runs(torn)
    kept = {(0, 0), (1, 0)} if records == "one per call" else set()
    assert (before.done, before.damaged) == (kept, 1)
    monkeypatch.setenv(RESTART, "1")
    assert run_element(store.path, 0, 0, "J_0").ran == 4 - len(kept)
    after = items(store, "J_0")
    assert not any(type(i) is Corrupt for i in after)
    assert Counter(i.call for i in after if type(i) is Result) == {0: 1, 1: 1, 2: 1, 3: 1}


def worker(store: BatchStore, element: str, restarts: str = "0") -> subprocess.Popen[bytes]:
    env = {**os.environ, RESTART: restarts, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-m", "corral.worker", store.path, "0", "0", element]
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def test_a_worker_killed_while_it_writes_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    plan = plan_of(Mode.PULL, 400, restart_env=RESTART)
    store = make_batch(tmp_path, time.sleep, [((0.002,), {})] * 400, plan)
    proc = worker(store, "J_0")
    for _ in range(3000):  # until some Results are written, and the worker is busy writing more
        if len(results(store, "J_0")) >= 20 or proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    before = read_element_runs(Path(store.stream_path("J_0")).read_bytes())  # readable, at worst torn
    assert before.damaged <= 1 and 20 <= len(before.done) < 400
    assert worker(store, "J_0", restarts="1").wait(timeout=120) == 0
    after = items(store, "J_0")
    assert not any(type(i) is Corrupt for i in after)
    assert Counter(i.call for i in after if type(i) is Result) == {c: 1 for c in range(400)}
    assert [i.run for i in after if type(i) is Start] == [0, 1]
