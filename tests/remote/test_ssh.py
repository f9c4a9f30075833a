"""The SSH transport against real OpenSSH servers on loopback (scripts/test-sshd.sh, started
by the ``node`` fixture): the agent as the remote, non-root user, one authentication for a
session's requests, ProxyJump through a second server, and host keys always checked."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import corral
from corral.transports.pipe import AgentLost
from corral.transports.ssh import SshTransport

from .conftest import LoginNode


@pytest.fixture
def ssh(node: LoginNode) -> Iterator[SshTransport]:
    transport = SshTransport("corral-login", node.python, config=node.config)
    transport.exit_master()  # each test starts without a master connection
    yield transport
    transport.close()
    transport.exit_master()


def test_the_agent_runs_as_the_remote_user_with_its_own_corral(ssh: SshTransport, node: LoginNode) -> None:
    said = ssh.hello()
    assert said["user"] == node.user and said["executable"] == node.python
    assert said["corral"] == corral.__version__ and said["python"][:2] == [3, 11] and said["cloudpickle"]


def test_a_sessions_requests_and_a_second_session_take_one_authentication(
    ssh: SshTransport, node: LoginNode
) -> None:
    before = node.logins()
    folder = f"{node.home}/corral-test-{uuid.uuid4().hex[:8]}"
    ssh.makedirs(folder)
    ssh.write_many([(f"{folder}/a.log", b"abc"), (f"{folder}/b.bin", b"\x00" * 10)])
    assert ssh.scan(folder, {}) == {"a.log": b"abc"}
    assert sorted(ssh.listdir(folder)) == ["a.log", "b.bin"]
    assert ssh.run(["sbatch", "--version"], timeout=30).stdout.startswith("slurm")
    other = SshTransport("corral-login", node.python, config=node.config)  # a second session, same master
    try:
        assert other.read_private(f"{folder}/a.log") == b"abc"
    finally:
        other.close()
    assert node.logins() - before == 1
    info = os.stat(f"{folder}/a.log")
    assert (info.st_uid, info.st_mode & 0o777) == (uid(node.user), 0o600)
    assert os.stat(folder).st_mode & 0o777 == 0o700


def uid(user: str) -> int:
    return int(subprocess.run(["id", "-u", user], capture_output=True, text=True, check=True).stdout)


def test_proxyjump_through_a_second_server_from_an_ssh_config_alias(node: LoginNode) -> None:
    behind = SshTransport("corral-behind", node.python, config=node.config)
    behind.exit_master()
    jumps = node.logins("jump")
    try:
        assert behind.hello()["user"] == node.user
    finally:
        behind.close()
        behind.exit_master()
    assert node.logins("jump") - jumps == 1


def test_an_unknown_host_key_is_refused_before_any_request_is_carried_out(
    tmp_path: Path, node: LoginNode
) -> None:
    config = tmp_path / "ssh_config"
    known = str(node.state / "known_hosts")
    config.write_text(Path(node.config).read_text().replace(known, str(tmp_path / "empty_known_hosts")))
    (tmp_path / "empty_known_hosts").write_text("")
    stranger = SshTransport("corral-login", node.python, config=str(config))
    stranger.exit_master()
    target = f"{node.home}/never-{uuid.uuid4().hex[:8]}"
    with pytest.raises(AgentLost, match="Host key verification failed"):
        stranger.makedirs(target)
    assert not os.path.exists(target)
