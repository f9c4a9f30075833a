"""The records of element streams (corral.store.streams): every kind reads back as written,
a body that is no record fails only the call it names, damage never kills the reader and
never invents a record, and the worker's writer leaves only whole frames, even after a kill."""

from __future__ import annotations

import json
import os
import random
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.errors import UnsafeWorkDirError
from corral.store.frames import Corrupt, encode_frame, scan_frames
from corral.store.streams import (
    RESULT_INLINE_MAX,
    Beat,
    Claim,
    End,
    Foreign,
    Item,
    Progress,
    Record,
    Result,
    Results,
    Skip,
    Start,
    StreamReader,
    StreamWriter,
    decode_body,
    encode_record,
    read_element_runs,
    truncate_torn_tail,
)


def result(call: int, attempt: int = 0, payload: bytes = b"\x80\x04K\x07.", **fields: object) -> Result:
    values: dict[str, object] = dict(
        call=call, attempt=attempt, ok=True, type_name="", message="", traceback="", host="node-1",
        started=1718000000.25, finished=1718000001.5, out=10 * call, err=0, in_file=False, payload=payload,
    )  # fmt: skip
    values.update(fields)
    return Result(**values)  # type: ignore[arg-type]


EVERY_KIND: list[Record] = [
    Start(element="4242_3", host="node-1", pid=812, run=0, out=0, err=0, t=1718000000.0),
    Claim(sub=0, pos=96, n=32, out=0, err=12, t=1718000000.5),
    Progress(call=96, attempt=0, step=3, total=None, metrics={}, t=1718000001.0),
    Progress(
        call=96, attempt=1, step=0.5, total=10,
        metrics={"loss": 0.25, "epoch": 3, "phase": "warm-up ü", "best": True, "lr": None}, t=1.0,
    ),
    result(96),
    result(97, 2, payload=b"\n\n\xc7\x1e\x00 newlines and a MAGIC in a pickle"),
    result(98, ok=False, type_name="builtins.ValueError", message="bad x: 'é'\n", traceback="Traceback …\n"),
    result(99, payload=b"", in_file=True),
    Results(
        host="node-1", out=970, err=0, calls=(101, 102, 7), attempts=(0, 0, 3), started=(1.5, 2.0, 2.25),
        finished=(2.0, 2.25, 3.0), payloads=(b"\x80\x04K\x07.", b"", b"\n\n\xc7 newlines\n"),
    ),
    Results(
        host="", out=0, err=5, calls=(0,), attempts=(0,), started=(0.0,), finished=(0.0,), payloads=(b"x",)
    ),
    Skip(call=100, attempt=0, why="cancelled by the client"),
    Beat(t=1718000002.0),
    End(code=-9, ran=4, failed=1, t=1718000003.0),
    End(code=0, ran=0, failed=0, t=0.0),
]  # fmt: skip


def encode_all(records: list[Record]) -> bytes:
    return b"".join(encode_record(record) for record in records)


def items_of(data: bytes, cuts: list[int] | None = None) -> list[tuple[int, Item]]:
    reader = StreamReader()
    out: list[tuple[int, Item]] = []
    cuts = cuts or []
    for start, stop in zip([0, *cuts], [*cuts, len(data)], strict=True):
        out += reader.feed(data[start:stop])
    return out + reader.finish()


@pytest.mark.parametrize("record", EVERY_KIND, ids=lambda record: type(record).__name__)
def test_every_kind_round_trips(record: Record) -> None:
    frame = encode_record(record)
    assert decode_body(7, frame[10:]) == record
    assert type(decode_body(7, frame[10:])) is type(record)


def test_the_json_line_is_short_ascii_with_the_kind_in_k() -> None:
    body = encode_record(result(5))[10:]
    line, _, payload = body.partition(b"\n")
    assert line.isascii() and payload == b"\x80\x04K\x07."
    assert json.loads(line) == {
        "k": "out", "c": 5, "a": 0, "ok": True, "ty": "", "msg": "", "tb": "", "h": "node-1",
        "t0": 1718000000.25, "t1": 1718000001.5, "o": 50, "e": 0, "f": False,
    }  # fmt: skip
    assert encode_record(Beat(t=2.0))[10:] == b'{"k":"beat","t":2.0}'


def test_records_fed_byte_by_byte_or_in_random_splits_are_the_same() -> None:
    data = encode_all(EVERY_KIND)
    whole = items_of(data)
    assert [record for _, record in whole] == EVERY_KIND
    assert items_of(data, list(range(1, len(data)))) == whole
    rng = random.Random(5)
    for _ in range(30):
        assert items_of(data, sorted(rng.sample(range(1, len(data)), 12))) == whole


def test_the_cursor_is_the_offset_after_the_last_whole_record() -> None:
    data = encode_all(EVERY_KIND[:3])
    reader = StreamReader()
    assert [offset for offset, _ in reader.feed(data[:-3])] == [0, len(encode_record(EVERY_KIND[0]))]
    assert reader.offset == len(data) - len(encode_record(EVERY_KIND[2]))
    assert reader.position == len(data) - 3


def test_a_result_with_a_fine_header_and_a_huge_payload_is_fine() -> None:
    big = result(3, payload=os.urandom(5 * 1024 * 1024) + b"\n")
    assert items_of(encode_record(big)) == [(0, big)]
    assert RESULT_INLINE_MAX == 256 * 1024  # the writer's threshold, not the reader's limit


def frame(line: str | bytes, payload: bytes | None = None) -> bytes:
    body = line.encode() if isinstance(line, str) else line
    return encode_frame(body if payload is None else body + b"\n" + payload)


OUT = '"ok":true,"ty":"","msg":"","tb":"","h":"n","t0":1.0,"t1":2.0,"o":0,"e":0,"f":false'
IN_FILE = OUT.replace('"f":false', '"f":true')
OUTS = '{"k":"outs","h":"n","o":0,"e":0,"c":[4,5],"a":[0,0],"t0":[1.0,2.0],"t1":[2.0,3.0],"n":[1,1]}'


def outs(old: str, new: str, payloads: bytes = b"ab") -> bytes:
    """A frame of OUTS with ``old`` replaced by ``new``."""
    assert old in OUTS
    return frame(OUTS.replace(old, new), payloads)


def prog(step: str = "1", metrics: str = "{}") -> bytes:
    return frame(f'{{"k":"prog","c":4,"a":0,"st":{step},"tot":null,"m":{metrics},"t":1.0}}')


# (what is wrong, the frame, the call and attempt the Foreign names, a word of its reason)
FOREIGN: list[tuple[str, bytes, int | None, int | None, str]] = [
    ("not JSON", frame("{'k': 'out'}"), None, None, "not a JSON record"),
    ("not an object", frame("[1,2]"), None, None, "not a JSON object"),
    ("JSON then more", frame('{"k":"beat","t":1.0}{"t":2.0}'), None, None, "extra data"),
    ("not ASCII", frame('{"k":"skip","c":1,"a":0,"why":"\xe9"}'.encode("latin-1")), None, None, "JSON"),
    ("an unknown kind", frame('{"k":"oops","c":4,"a":1}'), 4, 1, "unknown record kind 'oops'"),
    ("no kind", frame('{"c":4,"a":1}'), 4, 1, "unknown record kind None"),
    ("a missing field", frame('{"k":"out","c":4,"a":1,"ok":true}', b""), 4, 1, "no field"),
    ("an unknown field", frame('{"k":"skip","c":4,"a":1,"why":"","x":1}'), 4, 1, "unknown fields ['x']"),
    ("a bool for an int", frame('{"k":"out","c":4,"a":true,' + OUT + "}", b""), 4, None, "field 'a': True"),
    ("a float for an int", frame('{"k":"out","c":4.0,"a":1,' + OUT + "}", b""), None, 1, "4.0"),
    ("a string for an int", frame('{"k":"skip","c":"4","a":1,"why":""}'), None, 1, "'4'"),
    ("a negative call", frame('{"k":"skip","c":-4,"a":1,"why":""}'), None, 1, "-4"),
    ("an int for a bool", frame('{"k":"out","c":4,"a":1,' + OUT.replace("true", "1") + "}", b""), 4, 1, "1"),
    ("NaN", prog("NaN"), None, None, "NaN"),
    ("Infinity by overflow", prog("1e999"), 4, 0, "inf"),
    ("a metric that is a list", prog(metrics='{"x":[1]}'), 4, 0, "[1]"),
    ("a metric that is an object", prog(metrics='{"x":{}}'), 4, 0, "{}"),
    ("a bool step", prog("true"), 4, 0, "True"),
    ("an empty claim", frame('{"k":"claim","s":0,"p":0,"n":0,"o":0,"e":0,"t":1.0}'), None, None, ">= 1"),
    ("a payload after a beat", frame('{"k":"beat","t":1.0}', b"x"), None, None, "a payload after"),
    ("a payload and in_file", frame('{"k":"out","c":4,"a":1,' + IN_FILE + "}", b"x"), 4, 1, "in_file"),
    ("a string exit code", frame('{"k":"end","code":"0","ran":0,"fail":0,"t":1.0}'), None, None, "'0'"),
    ("an empty body", frame(""), None, None, "not a JSON record"),
    ("a run with lists of other lengths", outs('"a":[0,0]', '"a":[0]'), None, None, "outs"),
    ("a run whose payloads do not add up", frame(OUTS, b"abc"), None, None, "do not add up"),
    ("a run with a negative call", outs('"c":[4,5]', '"c":[4,-5]'), None, None, "outs"),
    ("a run with an int time", outs('"t0":[1.0,2.0]', '"t0":[1,2.0]'), None, None, "outs"),
    ("a run with an extra field", outs('"h":"n"', '"h":"n","x":1'), None, None, "outs"),
    ("an empty run", outs('"c":[4,5],"a":[0,0],"t0":[1.0,2.0],"t1":[2.0,3.0],"n":[1,1]',
                          '"c":[],"a":[],"t0":[],"t1":[],"n":[]', b""), None, None, "outs"),
    ("a run without its payload line", frame(OUTS), None, None, "outs"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "call", "attempt", "reason"), [f[1:] for f in FOREIGN], ids=[f[0] for f in FOREIGN]
)
def test_a_body_that_is_no_record_is_foreign_naming_its_call_when_readable(
    data: bytes, call: int | None, attempt: int | None, reason: str
) -> None:
    before, after = encode_record(result(1)), encode_record(result(2))
    items = items_of(before + data + after)
    assert [item for _, item in items] == [result(1), items[1][1], result(2)]
    offset, foreign = items[1]
    assert isinstance(foreign, Foreign) and offset == foreign.offset == len(before)
    assert (foreign.call, foreign.attempt) == (call, attempt)
    assert reason in foreign.reason
    assert decode_body(offset, data[10:]) == foreign  # the one-by-one decoder agrees


def test_white_space_around_the_json_is_no_harm_either_way() -> None:
    data = frame(' {"k":"beat","t":1.0}\t') + frame('{"k":"beat", "t":2.0}')
    assert [item for _, item in items_of(data)] == [Beat(t=1.0), Beat(t=2.0)]
    assert decode_body(0, b' {"k":"beat","t":1.0}\t') == Beat(t=1.0)


def test_a_float_field_takes_an_int_and_gives_a_float() -> None:
    record = decode_body(0, b'{"k":"beat","t":5}')
    assert isinstance(record, Beat) and record == Beat(t=5.0) and type(record.t) is float


@pytest.mark.parametrize(
    "record",
    [
        Beat(t=float("nan")),
        Progress(call=1, attempt=0, step=1, total=None, metrics={"x": object()}, t=1.0),  # type: ignore[dict-item]
        Progress(call=1, attempt=0, step=1, total=None, metrics={"x": float("inf")}, t=1.0),
        Skip(call=-1, attempt=0, why=""),
        Claim(sub=0, pos=0, n=1, out=0, err=0, t=True),
        result(1, payload=b"x", in_file=True),
        Results(host="h", out=0, err=0, calls=(), attempts=(), started=(), finished=(), payloads=()),
        Results(
            host="h",
            out=0,
            err=0,
            calls=(1, 2),
            attempts=(0,),
            started=(1.0,),
            finished=(1.0,),
            payloads=(b"",),
        ),
        Results(
            host="h",
            out=0,
            err=0,
            calls=(1,),
            attempts=(0,),
            started=(float("nan"),),
            finished=(1.0,),
            payloads=(b"",),
        ),
    ],
)
def test_what_no_reader_would_accept_is_not_written(record: Record) -> None:
    with pytest.raises(ValueError, match="cannot write|in_file"):
        encode_record(record)


# -- damage, fuzzed ---------------------------------------------------------------------------

KINDS = st.sampled_from(["start", "claim", "prog", "out", "outs", "skip", "beat", "end"])


def numbered(kind: str, n: int, payload: bytes) -> Record:
    """A record told apart from every other one by ``n``."""
    t = float(n)
    makers: dict[str, Callable[[], Record]] = {
        "start": lambda: Start(element=f"1_{n}", host="h", pid=n, run=0, out=n, err=0, t=t),
        "claim": lambda: Claim(sub=0, pos=n, n=1, out=n, err=n, t=t),
        "prog": lambda: Progress(call=n, attempt=0, step=n, total=None, metrics={"m": n}, t=t),
        "out": lambda: result(n, payload=payload),
        "outs": lambda: Results(
            host="h",
            out=n,
            err=0,
            calls=(n, n + 1),
            attempts=(0, 1),
            started=(t, t),
            finished=(t, t),
            payloads=(payload, payload[:3]),
        ),
        "skip": lambda: Skip(call=n, attempt=0, why="x"),
        "beat": lambda: Beat(t=t),
        "end": lambda: End(code=n, ran=n, failed=0, t=t),
    }
    return makers[kind]()


Damage = tuple[str, int, int] | tuple[str, int, bytes] | None
DAMAGE = st.one_of(
    st.none(),
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(0, 7)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 40)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.binary(min_size=1, max_size=40)),
)


def damaged(frame_: bytes, damage: Damage) -> bytes:
    if damage is None:
        return frame_
    what, at, arg = damage
    at %= len(frame_)
    if isinstance(arg, bytes):
        return frame_[:at] + arg + frame_[at:]
    if what == "flip":
        return frame_[:at] + bytes([frame_[at] ^ (1 << arg)]) + frame_[at + 1 :]
    return frame_[:at] + frame_[at + arg :]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(
        st.tuples(KINDS, st.binary(max_size=300), DAMAGE, st.binary(max_size=30)), min_size=1, max_size=25
    ),
    truncate=st.integers(0, 200),
    chunks=st.lists(st.integers(1, 700), max_size=40),
)
def test_damage_never_kills_the_reader_nor_invents_or_loses_an_untouched_record(
    pieces: list[tuple[str, bytes, Damage, bytes]], truncate: int, chunks: list[int]
) -> None:
    written: list[Record] = []
    untouched: list[Record] = []
    data = b""
    for n, (kind, payload, damage, garbage) in enumerate(pieces):
        record = numbered(kind, n, payload)
        frame_ = encode_record(record)
        data += garbage + damaged(frame_, damage)
        written.append(record)
        if damaged(frame_, damage) == frame_:
            untouched.append(record)
    kept = max(0, len(data) - truncate)
    untouched = [r for r in untouched if data.find(encode_record(r)) + len(encode_record(r)) <= kept]
    data = data[:kept]

    cuts, position = [], 0
    for size in chunks:
        position += size
        if position < len(data):
            cuts.append(position)
    items = items_of(data, cuts)

    offsets = [offset for offset, _ in items]
    assert offsets == sorted(set(offsets))
    records = [item for _, item in items if not isinstance(item, (Corrupt, Foreign))]
    assert all(record in written for record in records)  # nothing invented
    assert all(record in records for record in untouched)  # nothing untouched lost
    assert not any(isinstance(item, Foreign) for _, item in items)  # damage never passes the crc
    assert items == items_of(data)  # the chunking changes nothing


# -- the worker's writer ----------------------------------------------------------------------


@pytest.fixture
def private_umask() -> Iterator[None]:
    """A umask that would let others read a file created 0644: the 0600 is the writer's."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_new_stream_is_private_and_whole_frames_come_back(tmp_path: Path, private_umask: None) -> None:
    path = tmp_path / "4242_3.log"
    with StreamWriter(path) as writer:
        for record in EVERY_KIND:
            writer.write(record)
        writer.sync()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [record for _, record in items_of(path.read_bytes())] == EVERY_KIND


def test_concurrent_writers_in_four_threads_leave_only_whole_frames(
    tmp_path: Path, private_umask: None
) -> None:
    path = tmp_path / "s.log"
    writer = StreamWriter(path)
    big = b"p" * 70_000  # far above a page, so that interleaved writes would show

    def write_sixty(k: int) -> None:
        for i in range(60):
            writer.write(result(1000 * k + i, payload=big))

    threads = [threading.Thread(target=write_sixty, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    writer.close()
    records = [record for _, record in items_of(path.read_bytes())]
    assert all(isinstance(record, Result) and record.payload == big for record in records)
    calls = sorted(record.call for record in records if isinstance(record, Result))
    assert calls == sorted(1000 * k + i for k in range(4) for i in range(60))


def test_a_worker_killed_mid_write_leaves_a_stream_repaired_before_the_next_run(
    tmp_path: Path, private_umask: None
) -> None:
    path = tmp_path / "s.log"
    first: list[Record] = [Start(element="1_0", host="h", pid=1, run=0, out=0, err=0, t=1.0), result(1)]
    with StreamWriter(path) as writer:
        for record in first:
            writer.write(record)
    torn = encode_record(result(2))[:25]
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.write(fd, torn)  # what a SIGKILL inside os.write leaves
    os.close(fd)
    assert truncate_torn_tail(path) == len(torn)
    assert truncate_torn_tail(path) == 0
    second: list[Record] = [Start(element="1_0", host="h", pid=2, run=1, out=0, err=0, t=2.0), result(2)]
    with StreamWriter(path) as writer:
        for record in second:
            writer.write(record)
    items = items_of(path.read_bytes())
    assert [record for _, record in items] == first + second
    assert scan_frames(path.read_bytes(), final=True)[1] == path.stat().st_size


def test_a_client_that_read_the_torn_tail_rereads_from_its_cursor_after_the_repair(
    tmp_path: Path, private_umask: None
) -> None:
    path = tmp_path / "s.log"
    with StreamWriter(path) as writer:
        writer.write(result(1))
    with open(path, "ab") as torn:
        torn.write(encode_record(result(2))[:40])
    reader = StreamReader()
    assert reader.feed(path.read_bytes()) == [(0, result(1))]
    truncate_torn_tail(path)
    restarted = Start(element="1_0", host="h", pid=2, run=1, out=0, err=0, t=2.0)
    with StreamWriter(path) as writer:
        writer.write(restarted)
        writer.write(result(2))
    assert reader.position != reader.offset
    cursor = reader.rewind()
    assert [record for _, record in reader.feed(path.read_bytes()[cursor:])] == [restarted, result(2)]


def test_without_the_repair_the_torn_record_alone_is_lost(tmp_path: Path) -> None:
    data = encode_record(result(1)) + encode_record(result(2))[:25] + encode_record(result(3))
    assert [type(item) for _, item in items_of(data)] == [Result, Corrupt, Result]


def test_a_missing_stream_has_nothing_to_repair(tmp_path: Path) -> None:
    assert truncate_torn_tail(tmp_path / "none.log") == 0


def test_a_symbolic_link_at_the_stream_path_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    link = tmp_path / "s.log"
    link.symlink_to(target)
    with pytest.raises(OSError):
        StreamWriter(link)
    with pytest.raises(OSError):
        truncate_torn_tail(link)
    assert target.read_bytes() == b""


def test_a_fifo_or_a_stream_others_can_write_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.log"
    os.mkfifo(fifo)
    with pytest.raises(OSError):
        StreamWriter(fifo)
    shared = tmp_path / "shared.log"
    shared.write_bytes(b"")
    shared.chmod(0o622)
    with pytest.raises(UnsafeWorkDirError, match="only you can write"):
        StreamWriter(shared)


# -- a restarted element's own view -----------------------------------------------------------


def test_a_restarted_element_learns_its_claims_and_finished_calls() -> None:
    records: list[Record] = [
        Start(element="7_1", host="h", pid=1, run=0, out=0, err=0, t=1.0),
        Claim(sub=0, pos=0, n=3, out=0, err=0, t=1.0),
        result(0),
        Skip(call=1, attempt=0, why="cancelled"),
        Progress(call=2, attempt=0, step=1, total=None, metrics={}, t=1.5),
        Start(element="7_1", host="h", pid=2, run=1, out=5, err=0, t=2.0),
        Claim(sub=1, pos=6, n=2, out=5, err=0, t=2.0),
        result(2, 1),
    ]
    data = encode_all(records) + encode_record(result(7))[:30]
    runs = read_element_runs(data)
    assert runs.next_run == 2
    assert runs.claims == (records[1], records[6])
    assert runs.done == {(0, 0), (1, 0), (2, 1)}
    assert runs.damaged == 1  # the torn Result of call 7: not done
    assert read_element_runs(b"").next_run == 0


def test_a_run_stands_for_one_result_per_call_with_empty_output_ranges() -> None:
    run = EVERY_KIND[8]
    assert isinstance(run, Results)
    assert list(run.each()) == [
        result(101, started=1.5, finished=2.0, out=970),
        result(102, payload=b"", started=2.0, finished=2.25, out=970),
        result(7, 3, payload=b"\n\n\xc7 newlines\n", started=2.25, finished=3.0, out=970),
    ]
    runs = read_element_runs(encode_record(run))
    assert (runs.done, runs.failed) == ({(101, 0), (102, 0), (7, 3)}, set())
