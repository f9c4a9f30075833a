"""Reconnection and preflight against the real loopback login node (scripts/test-sshd.sh): a
master connection closed mid-session is replaced by one new login, later sessions never
prompt, and preflight turns every way a remote host can be wrong into a clear error before
anything is created there."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import corral
from corral.errors import PreflightError
from corral.transports.pipe import AgentLost
from corral.transports.preflight import preflight
from corral.transports.ssh import SshTransport

from .conftest import LoginNode


@pytest.fixture
def transports(node: LoginNode) -> Iterator[list[SshTransport]]:
    """SshTransports to corral-login made by a test, each starting without a master
    connection (they all share one, by ControlPath) and closed at the end."""
    made: list[SshTransport] = []
    made_one = SshTransport("corral-login", node.python, config=node.config)
    made_one.exit_master()
    yield made
    for transport in made:
        transport.close()
    made_one.exit_master()


def connect(made: list[SshTransport], python: str, config: str, **options: float) -> SshTransport:
    transport = SshTransport("corral-login", python, config=config, **options)  # type: ignore[arg-type]
    made.append(transport)
    return transport


def test_a_master_closed_mid_session_is_replaced_by_one_new_login(
    node: LoginNode, transports: list[SshTransport], caplog: pytest.LogCaptureFixture
) -> None:
    ssh = connect(transports, node.python, node.config, max_wait=60)
    before = node.logins()
    folder = f"{node.home}/corral-reconnect-{uuid.uuid4().hex[:8]}"
    ssh.makedirs(folder)
    first = ssh.hello()["pid"]
    assert node.logins() - before == 1
    ssh.exit_master()  # the laptop slept: the connection and the agent are gone
    with caplog.at_level(logging.WARNING, logger="corral.transports.pipe"):
        ssh.write_bytes(f"{folder}/after.bin", b"written after the reconnect")
        assert ssh.listdir(folder) == ["after.bin"] and ssh.hello()["pid"] != first
    assert node.logins() - before == 2  # exactly one more authentication, for all of it
    assert not [r for r in caplog.records if "cannot start another" in r.getMessage()]
    shutil.rmtree(folder)


@pytest.fixture
def askpass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An SSH_ASKPASS that ssh must use for every question (SSH_ASKPASS_REQUIRE=force): it
    writes each prompt to the file it returns and answers "no"."""
    asked = tmp_path / "asked"
    script = tmp_path / "askpass"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {asked}\necho no\n')
    script.chmod(0o755)
    monkeypatch.setenv("SSH_ASKPASS", str(script))
    monkeypatch.setenv("SSH_ASKPASS_REQUIRE", "force")
    monkeypatch.setenv("DISPLAY", ":0")
    return asked


def asking_config(node: LoginNode, tmp_path: Path) -> tuple[str, Path]:
    """A copy of the test config that would ask about an unknown host key (no BatchMode,
    StrictHostKeyChecking ask), with a known_hosts of its own, the right one to begin with."""
    known = tmp_path / "known_hosts"
    known.write_text((node.state / "known_hosts").read_text())
    text = Path(node.config).read_text().replace(str(node.state / "known_hosts"), str(known))
    text = text.replace("StrictHostKeyChecking yes", "StrictHostKeyChecking ask").replace(
        "BatchMode yes\n", ""
    )
    config = tmp_path / "ssh_config"
    config.write_text(text)
    return str(config), known


def test_a_reconnect_never_prompts_even_where_a_first_session_would(
    node: LoginNode,
    transports: list[SshTransport],
    tmp_path: Path,
    askpass: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config, known = asking_config(node, tmp_path)
    known.write_text("")
    first = connect(transports, node.python, config)
    with pytest.raises(AgentLost, match="Host key verification failed"):
        first.hello()  # a first session may ask: it did, and was told no
    assert "continue connecting" in askpass.read_text()
    askpass.unlink()

    known.write_text((node.state / "known_hosts").read_text())
    ssh = connect(transports, node.python, config, max_wait=0)
    ssh.hello()  # key-only: nothing to ask
    ssh.exit_master()
    known.write_text("")  # the key is no longer known: a reconnect must not ask about it
    with caplog.at_level(logging.WARNING), pytest.raises(AgentLost, match="does not know the host key"):
        ssh.hello()
    known.write_text((node.state / "known_hosts").read_text())
    ssh.max_wait = 30
    ssh.exit_master()
    assert ssh.hello()["user"] == node.user  # reconnected, asking nothing
    assert not askpass.exists()


@pytest.mark.parametrize(
    ("python", "says"),
    [
        (
            "/nope/bin/python",
            "corral-login has no Python at /nope/bin/python ('bash: line 1: /nope/bin/python: No",
        ),
        (
            "/usr/bin/python3",
            '/usr/bin/python3 on corral-login has no corral ("/usr/bin/python3: Error while',
        ),
    ],
)
def test_preflight_of_a_python_that_cannot_run_the_agent_says_so_and_creates_nothing(
    node: LoginNode, transports: list[SshTransport], python: str, says: str
) -> None:
    ssh = connect(transports, python, node.config, max_wait=0)
    target = f"{node.home}/corral-never-{uuid.uuid4().hex[:8]}"
    with pytest.raises(PreflightError) as caught:
        preflight(ssh, target)
    assert str(caught.value).startswith("preflight: cannot start a session with corral-login: ")
    assert says in str(caught.value) and not os.path.exists(target)


def test_preflight_refuses_another_python_minor_naming_both_sides(
    node: LoginNode, transports: list[SshTransport]
) -> None:
    if not os.path.exists(node.python_other):
        pytest.skip(f"no venv of another Python minor ({node.python_other}): root's pyenv lacks it")
    ssh = connect(transports, node.python_other, node.config, max_wait=0)
    target = f"{node.home}/corral-never-{uuid.uuid4().hex[:8]}"
    with pytest.raises(PreflightError) as caught:
        preflight(ssh, target)
    here = ".".join(map(str, sys.version_info[:3]))
    message = str(caught.value)
    assert f"corral-login's {node.python_other} is Python 3.12.1 with corral {corral.__version__}" in message
    assert f"this process runs Python {here} with corral {corral.__version__}" in message
    assert "make a Python 3.11 environment there" in message and not os.path.exists(target)


def test_preflight_resolves_the_work_dir_there_and_makes_it_private(
    node: LoginNode, transports: list[SshTransport]
) -> None:
    ssh = connect(transports, node.python, node.config, max_wait=0)
    name = f"corral-preflight-{uuid.uuid4().hex[:8]}"
    found = preflight(ssh, f"~/{name}/work")
    assert found.directory == f"{node.home}/{name}/work"  # the remote user's home, not root's
    assert (found.user, found.home, found.python) == (node.user, node.home, node.python)
    for folder in (f"{node.home}/{name}", found.directory):
        info = os.stat(folder)
        assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid != os.getuid()
    assert preflight(ssh, f"$HOME/{name}/work").directory == found.directory
    shutil.rmtree(f"{node.home}/{name}")


def test_preflight_of_a_host_that_will_not_let_us_in_says_what_to_run(
    node: LoginNode, transports: list[SshTransport], tmp_path: Path
) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        Path(node.config).read_text().replace(str(node.state / "client_ed25519"), "/nonexistent")
    )
    ssh = connect(transports, node.python, str(config), max_wait=0)
    with pytest.raises(
        PreflightError, match=r"ssh cannot log in to corral-login without you .*Permission"
    ) as caught:
        preflight(ssh, "~/never")
    assert f"run `ssh -F {config} -o ControlMaster=auto -o ControlPath=" in str(caught.value)
