"""Outcome and checkpoint files: a data record first, the pickle after it. Reading the record
never unpickles, and a file that is not one corral wrote is refused, not obeyed."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import cloudpickle
import pytest

from corral.engine.planning import Plan
from corral.engine.tracking import BatchState, SubState
from corral.errors import CorralError
from corral.store.batch import BatchStore, Outcome, decode_outcome_file, encode_outcome
from corral.store.frames import encode_frame
from corral.transports.local import LocalTransport

from .fakes import claim_record, result_record, start_record, write_stream
from .test_dependencies import array_spec


class Exploit:
    """A pickle that creates a marker file when loaded: what an attacker would plant."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def test_a_record_round_trips_and_keeps_its_payload_as_bytes() -> None:
    outcome = Outcome(
        False, cloudpickle.dumps(ValueError("no")), type_name="builtins.ValueError",
        message="line one\nline two \x1b[2J", traceback="Traceback ...\n", element="L1_0",
        host="n1", started=1.5, finished=2.5,
    )  # fmt: skip
    data = encode_outcome(outcome)
    assert data.count(b"\n") >= 2 and data.split(b"\n")[1].isascii()  # the record is one ASCII line
    assert decode_outcome_file(data) == outcome


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"corral-outcome 1\n",  # truncated before its record
        b"corral-outcome 1\n[1, 2]\n",  # a record that is no mapping
        b'corral-outcome 1\n{"ok": "yes"}\n',  # a field of the wrong type
        b'corral-outcome 1\n{"ok": true, "host": 3}\n',
        b'corral-outcome 1\n{"ok": true, "started": "noon"}\n',
    ],
)
def test_malformed_records_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_outcome_file(data)


def test_a_planted_pickle_is_refused_unread(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    store = BatchStore.create(str(tmp_path / "work"), "f", LocalTransport())
    with open(os.path.join(store.path, "results", "0.0.pkl"), "wb") as handle:
        pickle.dump(Exploit(str(marker)), handle)
    with pytest.raises(ValueError, match="not a corral outcome"):
        store.read_outcome(0, 0)
    with pytest.raises(ValueError):
        store.read_outcome_record(0, 0)
    assert not marker.exists()


def test_the_record_alone_has_no_payload(tmp_path: Path) -> None:
    store = BatchStore.create(str(tmp_path / "work"), "f", LocalTransport())
    store.write_outcome(3, 1, Outcome(True, cloudpickle.dumps(9), element="L1_0"))
    assert store.read_outcome_record(3, 1) == Outcome(True, b"", element="L1_0")
    assert cloudpickle.loads(store.read_outcome(3, 1).payload) == 9


def test_a_checkpoint_count_is_read_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    store = BatchStore.create(str(tmp_path / "work"), "f", LocalTransport())
    store.write_checkpoint(2, b"resume bytes", 3)
    assert store.read_checkpoint(2) == (b"resume bytes", 3)
    assert store.read_checkpoint(5) is None
    with open(os.path.join(store.path, "checkpoints", "4.pkl"), "wb") as handle:
        pickle.dump({"resume": b"", "requeues": Exploit(str(marker))}, handle)
    with pytest.raises(ValueError, match="not one corral wrote"):
        store.read_checkpoint(4)
    assert not marker.exists()


FOREIGN_RESULT = b'{"k":"out","c":0,"a":0,"ok":"yes"}'  # a whole frame, naming call 0, not a Result


@pytest.mark.parametrize("where", ["large-result file", "stream record"])
def test_a_foreign_outcome_fails_its_call_and_the_others_complete(tmp_path: Path, where: str) -> None:
    store = BatchStore.create(str(tmp_path / "work"), "f", LocalTransport())
    plan = Plan(0, 1, "static", ((0, 2, 0),), chunk=2)
    sub = SubState(plan, array_spec(elements=1), os.path.join(store.path, "subs", "0.sh"), "42")
    batch = BatchState(store, 2, [sub], lambda b, c: False)  # type: ignore[arg-type]
    list(batch.futures)  # made now: the scan completes them
    write_stream(store, "42_0", start_record("42_0"), claim_record(0, 0, 2))
    if where == "large-result file":
        with open(os.path.join(store.path, "results", "0.0.pkl"), "wb") as handle:
            handle.write(b"\x80\x04garbage")
        write_stream(store, "42_0", result_record(0, 0, in_file=True))
        expected = ["results/0.0.pkl", "not a corral outcome"]
    else:
        offset = os.path.getsize(store.stream_path("42_0"))
        with open(store.stream_path("42_0"), "ab") as stream:
            stream.write(encode_frame(FOREIGN_RESULT))
        expected = [f"streams/42_0.log at offset {offset}", "'ok'"]
    write_stream(store, "42_0", result_record(1, 0, cloudpickle.dumps("fine")))
    completions = {future.call: (ok, value) for future, ok, value in batch.scan()}
    assert completions[1] == (True, "fine")
    ok, error = completions[0]
    assert not ok and isinstance(error, CorralError)
    assert all(part in str(error) for part in expected), str(error)
    assert batch.done
