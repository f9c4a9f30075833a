"""The wire (corral.transports.wire) and the agent at its other end (corral.transports.agent),
driven through AgentTransport with the agent as a local subprocess: what a remote host runs,
without the SSH session (tests/remote has that)."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import corral
from corral.errors import UnsafeWorkDirError
from corral.transports.base import CommandTimeout
from corral.transports.pipe import AgentLost, AgentTransport
from corral.transports.wire import RemoteAgentError, WireError, decode, encode, read_message

AGENT = [sys.executable, "-m", "corral.transports.agent"]


@pytest.fixture
def agent() -> Iterator[AgentTransport]:
    transport = AgentTransport(AGENT)
    yield transport
    transport.close()


# -- the wire -------------------------------------------------------------------------------------


def test_values_cross_the_wire_as_they_were_with_tuples_as_lists() -> None:
    message = {
        "id": 7, "op": "scan", "args": ["/w", {"$b": 0, "$d": [1], "a.log": 5}],
        "kw": {"data": b"\x00\xff" * 3, "nested": [b"", {"k": (1, 2.5, None, True)}], "text": "é\n"},
    }  # fmt: skip
    back = read_message(io.BytesIO(encode(message)))
    assert back == {**message, "kw": {**message["kw"], "nested": [b"", {"k": [1, 2.5, None, True]}]}}


@pytest.mark.parametrize(
    ("header", "blobs", "says"),
    [
        (b"[1]", b"", "not a JSON object"),
        (b'{"id":1}', b"", "no list of blob lengths"),
        (b'{"id":1,"blobs":[2]}', b"x", "do not add up"),
        (b'{"id":"1","blobs":[]}', b"", "no integer id"),
        (b'{"id":1,"v":{"$b":3},"blobs":[1]}', b"x", "neither bytes nor a dict"),
        (b'{"id":1,"v":{"x":1},"blobs":[]}', b"", "neither bytes nor a dict"),
        (b'{"id":1,"v":NaN,"blobs":[]}', b"", "not JSON"),
        (b'{"id":1,"v":"\xff","blobs":[]}', b"", "not JSON"),
    ],
)
def test_a_header_that_is_not_a_message_is_a_wire_error(header: bytes, blobs: bytes, says: str) -> None:
    with pytest.raises(WireError, match=says):
        decode(header, blobs)


def test_a_frame_cut_short_or_foreign_is_a_wire_error_and_a_clean_end_is_none() -> None:
    frame = encode({"id": 1, "value": b"payload"})
    assert read_message(io.BytesIO(b"")) is None
    for cut in (3, 10, len(frame) - 1):
        with pytest.raises(WireError, match="ended inside a frame"):
            read_message(io.BytesIO(frame[:cut]))
    with pytest.raises(WireError, match="not a corral wire frame"):
        read_message(io.BytesIO(b"HTTP/1.1 200 OK\r\n" + frame))


def test_what_has_no_wire_form_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(WireError, match="a set cannot cross"):
        encode({"id": 1, "value": {1, 2}})
    with pytest.raises(WireError, match="key must be a string"):
        encode({"id": 1, "value": {1: "x"}})


# -- the agent ------------------------------------------------------------------------------------


def test_hello_says_what_the_other_side_runs(agent: AgentTransport) -> None:
    said = agent.hello()
    assert said["python"][:2] == list(sys.version_info[:2]) and said["corral"] == corral.__version__
    assert said["cloudpickle"] and said["pid"] != os.getpid() and said["executable"] == sys.executable


def test_the_agent_raises_what_it_caught_as_the_same_exception(agent: AgentTransport, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as missing:
        agent.read_bytes(str(tmp_path / "nothing"))
    assert missing.value.filename == str(tmp_path / "nothing")
    planted = tmp_path / "planted.pkl"
    planted.write_bytes(b"x")
    os.chmod(planted, 0o666)
    with pytest.raises(UnsafeWorkDirError) as unsafe:
        agent.read_private(str(planted))
    assert unsafe.value.path == str(planted) and unsafe.value.mode == 0o666
    with pytest.raises(CommandTimeout):
        agent.run(["sleep", "5"], timeout=0.2)
    with pytest.raises(ValueError, match="the agent answers no operation 'unlink'"):
        agent.request("unlink", str(planted))
    assert planted.exists()
    with pytest.raises(RemoteAgentError, match="the agent failed: TypeError: .*read_range"):
        agent.request("read_range", str(planted))  # an exception the wire does not rebuild
    result = agent.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_a_100_mb_payload_goes_and_comes_back_whole(agent: AgentTransport, tmp_path: Path) -> None:
    data = os.urandom(1 << 20) * 100
    path = str(tmp_path / "big.bin")
    agent.write_bytes(path, data)
    back = agent.read_private(path)
    assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_a_session_that_dies_is_reported_with_what_it_said_and_the_next_request_starts_another(
    tmp_path: Path,
) -> None:
    agent = AgentTransport([sys.executable, "-c", "import sys; sys.stderr.write('login refused\\n')"])
    with pytest.raises(AgentLost, match="cannot start a session with agent: .*login refused") as lost:
        agent.hello()
    assert lost.value.stderr == "login refused" == agent.said() and not lost.value.in_flight
    live = AgentTransport(AGENT)
    try:
        first = live.hello()["pid"]
        assert live._session is not None
        os.kill(live._session.proc.pid, signal.SIGKILL)
        live._session.proc.wait()
        assert live.hello()["pid"] != first  # a new session, transparently for a new request
    finally:
        live.close()


def test_an_agent_fed_garbage_exits_2_and_answers_nothing() -> None:
    proc = subprocess.run(AGENT, input=b"GET / HTTP/1.1\r\n\r\n", capture_output=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == b"" and b"not a corral wire frame" in proc.stderr
    assert subprocess.run(AGENT, input=b"", capture_output=True, timeout=60).returncode == 0
