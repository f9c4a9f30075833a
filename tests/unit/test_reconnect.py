"""A broken agent session (corral.transports.pipe): the next request starts another, tries a
failed start again with backoff on an injected clock (no real sleeping), and sends a request
that was in flight again only when that is safe (corral.transports.policy). The agents are
real subprocesses: the one a remote host runs, behind a gate that fails while told to, or one
that dies when a request arrives."""

from __future__ import annotations

import logging
import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.errors import CorralError
from corral.transports.agent import OPS
from corral.transports.pipe import AgentLost, AgentTransport
from corral.transports.policy import MAX_RESENDS, RESEND, Backoff, resends

AGENT = [sys.executable, "-m", "corral.transports.agent"]
DATA = Path(__file__).resolve().parents[1] / "data" / "ssh"

#: The agent, unless the file argv[1] exists: then it writes that file's text to stderr and
#: exits 255, as ssh does when it cannot connect or log in.
GATE = """
import os, sys
if os.path.exists(sys.argv[1]):
    sys.stderr.write(open(sys.argv[1]).read())
    sys.exit(255)
os.execv(sys.executable, [sys.executable, "-m", "corral.transports.agent"])
"""

#: The agent, except that it counts its sessions in the file argv[1] and, in the first
#: ``argv[2]`` sessions, exits without an answer when the second request (after the hello)
#: arrives: a session broken with that request in flight.
FLAKY = """
import os, sys
from corral.transports import agent, wire
from corral.transports.local import LocalTransport
with open(sys.argv[1], "a") as count:
    count.write("x")
flaky = os.path.getsize(sys.argv[1]) <= int(sys.argv[2])
transport, n = LocalTransport(), 0
while (request := wire.read_message(sys.stdin.buffer)) is not None:
    n += 1
    if flaky and n == 2:
        os._exit(1)
    sys.stdout.buffer.write(wire.encode(agent.answer(transport, request)))
    sys.stdout.buffer.flush()
"""


class Clock:
    """Time that passes only when slept; ``then`` runs after each sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self.then = lambda: None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        self.then()


class NoJitter(random.Random):
    def random(self) -> float:
        return 0.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gated(tmp_path: Path, clock: Clock) -> Iterator[tuple[AgentTransport, Path]]:
    """A transport whose first session is the agent, and whose later ones pass the gate."""
    down = tmp_path / "down"
    transport = AgentTransport(
        AGENT,
        reconnect_argv=[sys.executable, "-c", GATE, str(down)],
        clock=clock,
        sleep=clock.sleep,
        rng=NoJitter(),
    )
    yield transport, down
    transport.close()


def test_agent_lost_is_a_connection_error_so_oserror_paths_take_it() -> None:
    lost = AgentLost("the session broke", "ssh: said this", in_flight=True)
    assert isinstance(lost, ConnectionError) and isinstance(lost, OSError) and isinstance(lost, CorralError)
    assert str(lost) == "the session broke\nssh: said this" and lost.in_flight and lost.transient
    assert not AgentLost("x").in_flight


def test_the_backoff_doubles_from_one_second_to_a_60_second_cap_shortened_by_its_jitter() -> None:
    backoff = Backoff()
    assert [backoff.pause(n, NoJitter()) for n in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert backoff.pause(10_000, NoJitter()) == 60
    rng = random.Random(7)
    for n in range(12):
        plain = min(60.0, 2.0**n)
        assert 0.75 * plain <= backoff.pause(n, rng) <= plain
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.0)


def test_every_operation_the_agent_answers_is_classified_and_only_the_safe_ones_are_sent_again() -> None:
    assert set(RESEND) == OPS | {"hello"}
    never = {op for op, again in RESEND.items() if not again}
    assert never == {"run", "create_exclusive", "mkdir_exclusive"}
    assert not resends("an operation nobody classified")


def test_a_session_that_ended_is_replaced_at_the_next_request_without_waiting(
    gated: tuple[AgentTransport, Path], clock: Clock
) -> None:
    transport, _ = gated
    first = transport.hello()["pid"]
    transport.close()  # as the master connection going away between requests
    assert transport.hello()["pid"] != first and clock.slept == []


def test_a_reconnect_that_cannot_log_in_warns_once_and_waits_with_backoff_until_it_can(
    gated: tuple[AgentTransport, Path], clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    transport, down = gated
    transport.hello()
    transport.close()
    down.write_text((DATA / "login_publickey.stderr").read_text())
    clock.then = lambda: len(clock.slept) == 4 and down.unlink()  # fixed after the fourth pause
    with caplog.at_level(logging.WARNING, logger="corral.transports.pipe"):
        assert transport.listdir(str(down.parent)) == []  # the request carried on, once it could
    assert clock.slept == [1, 2, 4, 8]
    lost = [r.getMessage() for r in caplog.records if "cannot start another" in r.getMessage()]
    assert len(lost) == 1 and "Permission denied (publickey)" in lost[0]
    assert any("a new session started after 5 tries" in r.getMessage() for r in caplog.records)


def test_max_wait_bounds_the_waiting_and_zero_means_one_try(
    gated: tuple[AgentTransport, Path], clock: Clock, tmp_path: Path
) -> None:
    transport, down = gated
    transport.hello()
    transport.close()
    down.write_text((DATA / "connection_refused.stderr").read_text())
    transport.max_wait = 0
    with pytest.raises(AgentLost, match="1 try in 0 s did not start another.*Connection refused") as lost:
        transport.makedirs(str(tmp_path / "never"))
    assert clock.slept == [] and not lost.value.in_flight and not (tmp_path / "never").exists()
    transport.max_wait = 5
    with pytest.raises(AgentLost, match="4 tries in 5 s"):
        transport.hello()
    assert clock.slept == [1, 2, 2]  # the last pause ends at the deadline


def test_a_first_session_that_cannot_start_is_an_error_at_once_whatever_max_wait_says(
    tmp_path: Path, clock: Clock
) -> None:
    down = tmp_path / "down"
    down.write_text((DATA / "host_key_unknown.stderr").read_text())
    gate = [sys.executable, "-c", GATE, str(down)]
    transport = AgentTransport(gate, clock=clock, sleep=clock.sleep, max_wait=None)
    with pytest.raises(AgentLost, match="cannot start a session with agent: .*Host key verification failed"):
        transport.hello()
    assert clock.slept == []
    down.unlink()
    assert transport.hello()["pid"]  # still a first session: started as the first one was
    transport.close()


def flaky(tmp_path: Path, sessions: int) -> tuple[AgentTransport, Path]:
    count = tmp_path / "sessions"
    argv = [sys.executable, "-c", FLAKY, str(count), str(sessions)]
    return AgentTransport(argv, max_wait=0), count


def test_a_safe_request_in_flight_when_its_session_broke_is_sent_again_on_a_new_one(tmp_path: Path) -> None:
    transport, count = flaky(tmp_path, sessions=1)
    try:
        transport.makedirs(str(tmp_path / "made"))
        assert (tmp_path / "made").is_dir() and count.read_text() == "xx"
    finally:
        transport.close()


@pytest.mark.parametrize(
    ("op", "call"),
    [
        ("run", lambda t, p: t.run(["touch", p], timeout=10)),
        ("create_exclusive", lambda t, p: t.create_exclusive(p, b"claim")),
        ("mkdir_exclusive", lambda t, p: t.mkdir_exclusive(p)),
    ],
)
def test_an_unsafe_request_in_flight_is_not_sent_again_and_says_it_may_have_been_done(
    tmp_path: Path, op: str, call: object
) -> None:
    transport, count = flaky(tmp_path, sessions=1)
    try:
        with pytest.raises(AgentLost, match=f"broke during {op} .*may or may not have been") as lost:
            call(transport, str(tmp_path / "target"))  # type: ignore[operator]
        assert lost.value.in_flight and count.read_text() == "x"  # no second session for it
        assert transport.listdir(str(tmp_path)) == ["sessions"]  # the next request: a new session
    finally:
        transport.close()


def test_a_request_whose_sessions_keep_breaking_is_given_up_after_a_few_tries(tmp_path: Path) -> None:
    transport, count = flaky(tmp_path, sessions=100)
    with pytest.raises(AgentLost, match="broke during listdir") as lost:
        transport.listdir(str(tmp_path))
    assert lost.value.in_flight and len(count.read_text()) == MAX_RESENDS + 1
    transport.close()


def test_a_request_that_cannot_cross_the_wire_is_refused_without_breaking_the_session(tmp_path: Path) -> None:
    transport = AgentTransport(AGENT)
    try:
        pid = transport.hello()["pid"]
        with pytest.raises(CorralError, match="cannot cross"):
            transport.request("listdir", {1, 2})
        assert transport.hello()["pid"] == pid and os.path.isdir(tmp_path)
    finally:
        transport.close()
