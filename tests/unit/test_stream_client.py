"""The client's side of the per-element streams (corral.engine.tracking over corral.store.replay):
records written by hand into a real batch folder, read by BatchState.scan as the poll loop
reads them. Random bytes, truncated frames and foreign records fail only the calls they
name; the reader never raises; whole records are never lost."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral import CorralError, JobError
from corral.backends.base import ArraySpec
from corral.engine.elements import SubState
from corral.engine.planning import Plan
from corral.engine.tracking import BatchState
from corral.job import ElementStatus, JobState
from corral.resources import Resources
from corral.store.batch import BatchStore
from corral.store.protocol import Mode
from corral.store.streams import Claim, Progress, Result, Results, Start, encode_record
from corral.transports.local import LocalTransport

ELEMENT = "L1_0"


class NoOwner:
    def cancel_call(self, batch: BatchState, call: int) -> bool:
        raise AssertionError("not in these tests")

    def cancel_job_of(self, batch: BatchState, call: int) -> bool:
        raise AssertionError("not in these tests")


def make_batch(root: Path, calls: int, *, futures: bool = True) -> BatchState:
    os.umask(0o077)
    store = BatchStore.create(str(root), "fuzz", LocalTransport())
    store.write_batch(
        {"function": "f", "calls": calls, "backend": "local", "created": 0.0}, b"", [b""] * calls
    )
    plan = Plan(0, 1, Mode.PULL, ((0, calls, 0),), first_element=0, total_elements=1)
    spec = ArraySpec(
        batch_dir=store.path, sub=0, elements=1, resources=Resources(), job_name="f", python="x", chdir="/"
    )
    sub = SubState(plan, spec, "")
    batch = BatchState(store, calls, [sub], NoOwner())
    batch.ledger.submitted(0, "L1")
    if futures:
        list(batch.futures)  # made now: a scan completes them (a call without one keeps its value)
    return batch


def result(call: int, value: object, out: int = 0) -> Result:
    return Result(
        call=call, attempt=0, ok=True, type_name="", message="", traceback="", host="h", started=1.0,
        finished=2.0, out=out, err=0, in_file=False, payload=pickle.dumps(value),
    )  # fmt: skip


def run(calls: range) -> Results:
    """The Results of a run of ``calls``, each returning ten times its number."""
    n = len(calls)
    return Results(
        host="h", out=0, err=0, calls=tuple(calls), attempts=(0,) * n, started=(1.0,) * n,
        finished=(2.0,) * n, payloads=tuple(pickle.dumps(c * 10) for c in calls),
    )  # fmt: skip


def stream(calls: int) -> list[bytes]:
    """The frames an element writes for ``calls`` calls: Start, one Claim, one Result each."""
    frames = [encode_record(Start(element=ELEMENT, host="h", pid=1, run=0, out=0, err=0, t=0.0))]
    frames.append(encode_record(Claim(sub=0, pos=0, n=calls, out=0, err=0, t=0.0)))
    frames += [encode_record(result(c, c * 10)) for c in range(calls)]
    return frames


def append(batch: BatchState, data: bytes) -> None:
    path = batch.store.stream_path(ELEMENT)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def settle(batch: BatchState) -> dict[int, tuple[bool, object]]:
    """Every completion the scans give, by call."""
    done: dict[int, tuple[bool, object]] = {}
    for future, ok, value in batch.scan():
        assert future.call not in done, "a call completed twice"
        done[future.call] = (ok, value)
    return done


def test_whole_records_complete_their_calls_as_they_arrive(tmp_path: Path) -> None:
    batch = make_batch(tmp_path / "work", 3)
    frames = stream(3)
    data = b"".join(frames)
    append(batch, data[: len(frames[0]) + len(frames[1]) + 5])  # a torn Result at the end
    assert settle(batch) == {}
    assert all(f.running() for f in batch.futures)  # the claim started them all
    append(batch, data[len(frames[0]) + len(frames[1]) + 5 :])
    assert settle(batch) == {0: (True, 0), 1: (True, 10), 2: (True, 20)}
    assert settle(batch) == {}  # nothing twice


def test_a_foreign_record_fails_only_the_call_it_names(tmp_path: Path) -> None:
    batch = make_batch(tmp_path / "work", 3)
    frames = stream(3)
    from corral.store.frames import encode_frame

    frames[3] = encode_frame(b'{"k":"out","c":1,"a":0,"ok":"yes"}')  # call 1's Result, mistyped
    append(batch, b"".join(frames))
    done = settle(batch)
    assert done[0] == (True, 0) and done[2] == (True, 20)
    ok, error = done[1]
    assert not ok and isinstance(error, CorralError)
    assert f"{batch.store.stream_path(ELEMENT)} at offset" in str(error)


def test_a_progress_record_is_seen_within_one_scan(tmp_path: Path) -> None:
    batch = make_batch(tmp_path / "work", 2)
    frames = stream(2)[:2]
    frames.append(encode_record(Progress(call=0, attempt=0, step=3, total=10, metrics={"loss": 0.5}, t=1.0)))
    append(batch, b"".join(frames))
    settle(batch)
    seen = batch.futures[0].progress
    assert seen is not None and (seen.step, seen.total, seen.metrics) == (3, 10, {"loss": 0.5})
    assert batch.futures[1].progress is None
    assert batch.futures[0].stop()  # running: the mark is made
    assert batch.store.stop_requested(0, 0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    calls=st.integers(min_value=1, max_value=12),
    seed=st.integers(min_value=0, max_value=2**32),
    chunks=st.integers(min_value=1, max_value=6),
    runs=st.booleans(),
)
def test_random_damage_fails_only_affected_calls_and_never_the_reader(
    tmp_path_factory: pytest.TempPathFactory, calls: int, seed: int, chunks: int, runs: bool
) -> None:
    rng = random.Random(seed)
    batch = make_batch(tmp_path_factory.mktemp("fuzz"), calls)
    frames = stream(calls)
    holds = [set(), set()] + [{c} for c in range(calls)]  # the calls whose result each frame holds
    if runs:  # the Results as runs of random lengths, as a worker writes trivial calls
        frames, holds, call = frames[:2], holds[:2], 0
        while call < calls:
            n = rng.randint(1, calls - call)
            frames.append(encode_record(run(range(call, call + n))))
            holds.append(set(range(call, call + n)))
            call += n
    damaged: set[int] = set()  # calls whose result's frame was touched
    pieces = []
    for index, frame in enumerate(frames):
        touched = index >= 2 and rng.random() < 0.3
        if touched:
            damaged |= holds[index]
            how = rng.choice(["flip", "cut", "garbage"])
            if how == "flip":
                at = rng.randrange(len(frame))
                frame = frame[:at] + bytes([frame[at] ^ (1 << rng.randrange(8))]) + frame[at + 1 :]
            elif how == "cut":
                frame = frame[: rng.randrange(len(frame))]
            else:
                frame = frame + rng.randbytes(rng.randrange(1, 40))
        pieces.append(frame)
    data = b"".join(pieces)
    cuts = sorted(rng.sample(range(len(data) + 1), min(chunks, len(data) + 1)))
    done: dict[int, tuple[bool, object]] = {}
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        append(batch, data[start:end])
        for call, outcome in settle(batch).items():
            assert call not in done
            done[call] = outcome
    # The element ends: the engine decides what its stream's reader still holds, then fails
    # the calls that have no result, as it does for any element gone without them.
    batch.update({f"{ELEMENT}": ElementStatus(ELEMENT, JobState.COMPLETED)}, 100.0, 60.0)
    for future, ok, value in batch.failures(100.0, 0.0):
        assert future.call not in done
        done[future.call] = (ok, value)
    assert batch.done
    for call in range(calls):
        if call not in damaged:
            # An untouched record always arrives, whatever damage precedes it...
            assert done[call] == (True, call * 10), (call, done[call])
        else:
            # ...and a damaged one decodes whole, or fails its call alone: named, or ended.
            ok, value = done[call]
            assert (ok and value == call * 10) or isinstance(value, (CorralError, JobError))


def test_futures_nobody_asked_for_are_made_when_asked_with_what_happened_meanwhile(tmp_path: Path) -> None:
    batch = make_batch(tmp_path / "work", 4, futures=False)
    frames = stream(4)
    append(batch, b"".join(frames[:2]) + frames[2] + frames[4])  # all taken; calls 0 and 2 ended
    assert batch.scan() == []  # no future to complete: the values wait in the batch
    futures = batch.futures
    assert [futures.made(c) for c in range(4)] == [None] * 4
    assert futures[2].result(timeout=0) == 20 and futures.made(2) is futures[2]
    assert futures[1].running() and not futures[1].done()  # made running: an element has it
    append(batch, frames[3])
    assert [(f.call, ok, value) for f, ok, value in batch.scan()] == [(1, True, 10)]  # made: completed
    assert futures.hand_over(0, timeout=0) == 0
    assert futures[0].done() and futures[0] is not futures[2]  # let go: done, holding nothing
    assert futures[3].running()


def test_the_scheduler_has_something_to_tell_only_about_elements_the_streams_do_not_show() -> None:
    """Intake.quiet, the switch to a status query every 90 s: not before the scheduler said
    the element waits (or its stream shows it), not while it starts, not once its stream has
    been silent for three heartbeats, not once it wrote its End before the scheduler agrees."""
    import tempfile
    import time

    from corral.store.protocol import BEAT
    from corral.store.streams import End

    batch = make_batch(Path(tempfile.mkdtemp()) / "work", 2)

    def report(state: JobState) -> None:
        batch.update({ELEMENT: ElementStatus(ELEMENT, state, "n1")}, time.monotonic(), 1000.0)

    now = time.monotonic()
    assert not batch.quiet(now)  # submitted; the scheduler has said nothing yet
    report(JobState.PENDING)
    assert batch.quiet(now)  # waiting to start: its Start will show in its stream
    report(JobState.RUNNING)
    assert not batch.quiet(now)  # starting, its stream still empty
    append(batch, b"".join(stream(2)[:2]))  # Start and Claim
    batch.scan()
    now = time.monotonic()
    assert batch.quiet(now) and batch.quiet(now + 3 * BEAT - 0.5)
    assert not batch.quiet(now + 3 * BEAT + 0.1)  # silent for three heartbeats
    append(batch, encode_record(End(code=0, ran=0, failed=0, t=0.0)))
    batch.scan()
    assert not batch.quiet(time.monotonic())  # ended by its own account: the scheduler confirms
    report(JobState.COMPLETED)
    assert batch.quiet(time.monotonic())
