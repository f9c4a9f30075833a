"""Preflight of a remote host (corral.transports.preflight): the pure comparison of what each
side runs, its messages, and the check itself against a real agent in a local subprocess
(tests/remote runs it over SSH, against another Python minor too)."""

from __future__ import annotations

import os
import pwd
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.errors import PreflightError, UnsafeWorkDirError
from corral.transports.agent import OPS
from corral.transports.pipe import AgentTransport
from corral.transports.preflight import Versions, mismatch, preflight, unanswered

AGENT = [sys.executable, "-m", "corral.transports.agent"]
HERE = Versions((3, 11, 7), "0.5.0", "3.1.3")


@pytest.mark.parametrize(
    ("there", "says"),
    [
        (Versions((3, 11, 7), "0.5.0", "3.1.3"), None),
        (Versions((3, 11, 2), "0.5.0", "3.1.3"), None),  # another patch release reads the same pickles
        (
            Versions((3, 12, 1), "0.5.0", "3.1.3"),
            "login's /v/bin/python is Python 3.12.1 with corral 0.5.0 and cloudpickle 3.1.3; this process "
            "runs Python 3.11.7 with corral 0.5.0 and cloudpickle 3.1.3: pickles go both ways, so both sides "
            "need the same Python minor, corral and cloudpickle. To fix it, make a Python 3.11 environment "
            "there (python3.11 -m venv DIR), install corral==0.5.0 cloudpickle==3.1.3 in it and give its "
            "bin/python; or run this process with Python 3.12",
        ),
        (
            Versions((3, 11, 7), "0.4.0", "3.1.3"),
            "login's /v/bin/python is Python 3.11.7 with corral 0.4.0 and cloudpickle 3.1.3; this process "
            "runs Python 3.11.7 with corral 0.5.0 and cloudpickle 3.1.3: pickles go both ways, so both sides "
            "need the same Python minor, corral and cloudpickle. To fix it, install corral==0.5.0 there "
            "(/v/bin/python -m pip install corral==0.5.0)",
        ),
        (Versions((3, 11, 7), "0.5.0", "2.2.1"), "install cloudpickle==3.1.3 there"),
        (Versions((3, 11, 7), "0.5.0", ""), "with corral 0.5.0 and no cloudpickle; this process"),
        (Versions((3, 11, 7), "0.4.0", "2.2.1"), "install corral==0.5.0 cloudpickle==3.1.3 there"),
        (Versions((3, 11, 7), "", "3.1.3"), "with a corral of no known version and cloudpickle 3.1.3;"),
        (Versions((3, 11, 7), "0.5.0", "3.1.3", "pypy"), "is pypy 3.11.7 with corral 0.5.0"),
    ],
)
def test_pickles_travel_only_between_the_same_minor_corral_and_cloudpickle(
    there: Versions, says: str | None
) -> None:
    found = mismatch(there, HERE, host="login", python="/v/bin/python")
    if says is None or says.startswith("login's"):  # the whole message
        assert found == says
    else:
        assert says in (found or "")


def test_a_hello_without_a_python_version_is_refused() -> None:
    assert Versions.of({"python": [3, 12, 1], "corral": "1", "cloudpickle": "2"}) == Versions(
        (3, 12, 1), "1", "2"
    )
    for python in (None, "3.12", [3, 12], [3, 12, "1"]):
        with pytest.raises(PreflightError, match="no Python version"):
            Versions.of({"python": python})


class Counting(AgentTransport):
    def __init__(self) -> None:
        super().__init__(AGENT, max_wait=0)
        self.ops: list[str] = []

    def request(self, op: str, *args: Any, **kw: Any) -> Any:
        self.ops.append(op)
        return super().request(op, *args, **kw)


@pytest.fixture
def agent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Counting]:
    monkeypatch.setenv("CORRAL_PREFLIGHT_TEST", str(tmp_path))  # the agent's environment: "remote"
    transport = Counting()
    yield transport
    transport.close()


def test_preflight_says_who_and_what_runs_there_and_makes_the_work_dir_private_once(
    agent: Counting, tmp_path: Path
) -> None:
    found = preflight(agent, "$CORRAL_PREFLIGHT_TEST/work/dir")
    assert found.directory == str(tmp_path / "work" / "dir") and found.python == sys.executable
    assert (found.user, found.home) == (pwd.getpwuid(os.getuid()).pw_name, os.path.expanduser("~"))
    assert found.versions == Versions.here() and found.host == os.uname().nodename
    assert os.stat(tmp_path / "work" / "dir").st_mode & 0o777 == 0o700
    assert agent.ops == ["hello", "expand_path", "makedirs"]
    assert preflight(agent, "$CORRAL_PREFLIGHT_TEST/work/dir") is found and len(agent.ops) == 3
    assert preflight(agent, "$CORRAL_PREFLIGHT_TEST/other").directory == str(tmp_path / "other")


def test_preflight_creates_nothing_for_a_side_that_cannot_read_our_pickles(
    agent: Counting, tmp_path: Path
) -> None:
    other = Versions((3, 99, 0), Versions.here().corral, Versions.here().cloudpickle)
    with pytest.raises(PreflightError, match=r"is Python 3\.\d+\.\d+ .*; this process runs Python 3\.99\.0"):
        preflight(agent, "$CORRAL_PREFLIGHT_TEST/work", here=other)
    assert agent.ops == ["hello"] and not (tmp_path / "work").exists()


def test_preflight_refuses_a_work_dir_others_can_write(agent: Counting, tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir(mode=0o777)
    os.chmod(tmp_path / "shared", 0o777)
    with pytest.raises(UnsafeWorkDirError):
        preflight(agent, "$CORRAL_PREFLIGHT_TEST/shared")


def test_an_agent_that_cannot_start_is_a_preflight_error_quoting_what_it_said(tmp_path: Path) -> None:
    said = "/usr/bin/python3: Error while finding module specification for 'corral.transports.agent'"
    gone = AgentTransport([sys.executable, "-c", f"import sys; sys.exit({said!r})"], name="login")
    with pytest.raises(PreflightError, match="preflight: cannot start a session with login: "):
        preflight(gone, str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def test_an_agent_of_the_same_version_that_lacks_an_operation_is_refused_before_anything_is_written(
    agent: Counting, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A corral of the same version number built from other sources (development) would
    fail mid-map at the first request it does not know: preflight says so instead."""
    said = agent.hello()
    said["ops"] = [op for op in said["ops"] if op != "scan_many"]
    monkeypatch.setattr(agent, "hello", lambda: said)
    with pytest.raises(PreflightError, match=r"does not answer scan_many, which this one sends"):
        preflight(agent, "$CORRAL_PREFLIGHT_TEST/work")
    assert not (tmp_path / "work").exists()
    assert unanswered({"ops": sorted(OPS)}, host="h", python="p") is None
