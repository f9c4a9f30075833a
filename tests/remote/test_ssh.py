"""The SSH transport against real OpenSSH servers on loopback (scripts/test-sshd.sh, started
by the test command): the agent as the remote, non-root user, one authentication for a
session's requests, ProxyJump through a second server, and host keys always checked."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import corral
from corral.transports.pipe import AgentLost
from corral.transports.ssh import SshTransport

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("CORRAL_SSHD_STATE", "/var/lib/corral-sshd"))
CONFIG = str(STATE / "ssh_config")
USER = os.environ.get("CORRAL_REMOTE_USER", "corralr")
PYTHON = f"/home/{USER}/venv/bin/python"


@pytest.fixture(scope="module", autouse=True)
def login_node() -> None:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "test-sshd.sh"), "start"], capture_output=True, text=True
    )
    if out.returncode != 0:
        pytest.fail(f"test-sshd.sh start failed:\n{out.stdout}\n{out.stderr}")


def logins(server: str = "login") -> int:
    """Authentications the server accepted so far (LogLevel VERBOSE writes one line each)."""
    return len(re.findall(rf"Accepted publickey for {USER}", (STATE / f"{server}.log").read_text()))


@pytest.fixture
def ssh() -> Iterator[SshTransport]:
    transport = SshTransport("corral-login", PYTHON, config=CONFIG)
    transport.exit_master()  # each test starts without a master connection
    yield transport
    transport.close()
    transport.exit_master()


def test_the_agent_runs_as_the_remote_user_with_its_own_corral(ssh: SshTransport) -> None:
    said = ssh.hello()
    assert said["user"] == USER and said["executable"] == PYTHON
    assert said["corral"] == corral.__version__ and said["python"][:2] == [3, 11] and said["cloudpickle"]


def test_a_sessions_requests_and_a_second_session_take_one_authentication(ssh: SshTransport) -> None:
    before = logins()
    home = f"/home/{USER}"
    folder = f"{home}/corral-test-{uuid.uuid4().hex[:8]}"
    ssh.makedirs(folder)
    ssh.write_many([(f"{folder}/a.log", b"abc"), (f"{folder}/b.bin", b"\x00" * 10)])
    assert ssh.scan(folder, {}) == {"a.log": b"abc"}
    assert sorted(ssh.listdir(folder)) == ["a.log", "b.bin"]
    assert ssh.run(["sbatch", "--version"], timeout=30).stdout.startswith("slurm")
    other = SshTransport("corral-login", PYTHON, config=CONFIG)  # a second session, same master
    try:
        assert other.read_private(f"{folder}/a.log") == b"abc"
    finally:
        other.close()
    assert logins() - before == 1
    info = os.stat(f"{folder}/a.log")
    assert (info.st_uid, info.st_mode & 0o777) == (int(said_uid()), 0o600)
    assert os.stat(folder).st_mode & 0o777 == 0o700


def said_uid() -> str:
    return subprocess.run(["id", "-u", USER], capture_output=True, text=True, check=True).stdout.strip()


def test_proxyjump_through_a_second_server_from_an_ssh_config_alias() -> None:
    behind = SshTransport("corral-behind", PYTHON, config=CONFIG)
    behind.exit_master()
    jumps = logins("jump")
    try:
        assert behind.hello()["user"] == USER
    finally:
        behind.close()
        behind.exit_master()
    assert logins("jump") - jumps == 1


def test_an_unknown_host_key_is_refused_before_any_request_is_carried_out(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    text = Path(CONFIG).read_text().replace(str(STATE / "known_hosts"), str(tmp_path / "empty_known_hosts"))
    config.write_text(text)
    (tmp_path / "empty_known_hosts").write_text("")
    stranger = SshTransport("corral-login", PYTHON, config=str(config))
    stranger.exit_master()
    target = f"/home/{USER}/never-{uuid.uuid4().hex[:8]}"
    with pytest.raises(AgentLost, match="Host key verification failed"):
        stranger.makedirs(target)
    assert not os.path.exists(target)
