"""corral from a "laptop" to a login node that asks two factors, a key and then the password
(the sshd "mfa" of scripts/test-sshd.sh: ``AuthenticationMethods publickey,password``).

corral's ssh has no terminal, so the password can only be asked through ``SSH_ASKPASS``; it
is asked once, by the master connection, and every session after it (of this process, and
of the ``corral status`` and ``corral.attach`` processes after it) rides on that connection."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from .conftest import SCRIPT, LoginNode
from .test_laptop import finish, laptop, laptop_env, session


def remote_password() -> str:
    """The remote user's test password, as the script prints it."""
    said = subprocess.run(["bash", str(SCRIPT), "env"], capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in said.splitlines() if "=" in line)["CORRAL_REMOTE_PASSWORD"]


def mfa_log(node: LoginNode) -> dict[str, int]:
    """What the two-factor server logged so far: first factors, completed logins, failures."""
    text = (node.state / "mfa.log").read_text()
    return {
        what: len(re.findall(rf"{what} for {node.user}\b", text))
        for what in ("Partial publickey", "Accepted password", "Accepted publickey", "Failed password")
    }


def askpass(tmp_path: Path, password: str) -> tuple[Path, Path]:
    """An SSH_ASKPASS program that notes each call (a line in the counter) and answers."""
    counter = tmp_path / "asked"
    program = tmp_path / "askpass"
    program.write_text(
        f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> {shlex.quote(str(counter))}\n"
        f"printf '%s\\n' {shlex.quote(password)}\n"
    )
    program.chmod(0o700)
    return program, counter


def test_maps_status_logs_and_attach_ask_the_second_factor_once(node: LoginNode, tmp_path: Path) -> None:
    env = laptop_env(node, tmp_path, ssh="corral-mfa")
    toml = Path(env["XDG_CONFIG_HOME"], "corral", "config.toml")
    toml.write_text(toml.read_text().replace("[hosts.login]", "[hosts.mfa]"))
    program, counter = askpass(tmp_path, remote_password())
    env |= {"SSH_ASKPASS": str(program), "SSH_ASKPASS_REQUIRE": "force"}
    before = mfa_log(node)
    code = session("mfa")  # three maps, status, attach and logs
    try:
        out = finish(laptop(node, tmp_path, code, env))
    finally:  # the master connection (ControlPersist) is this test's alone: close it
        sockets = Path(env["XDG_RUNTIME_DIR"], "corral", "ssh")
        for socket in sockets.iterdir() if sockets.is_dir() else ():
            subprocess.run(["ssh", "-F", node.config, "-S", str(socket), "-O", "exit", "corral-mfa"],
                           capture_output=True, timeout=30)  # fmt: skip
    assert f"ATTACHED {sum(x * x for x in range(1000))}" in out, out
    assert "square" in out  # corral status, run on the host, listed the batches
    assert "call 7 of square-" in out  # corral logs, there too
    asked = counter.read_text().splitlines()
    assert len(asked) == 1 and "password" in asked[0], asked  # ssh's prompt, once
    after = mfa_log(node)
    assert {what: after[what] - before[what] for what in after} == {
        "Partial publickey": 1,  # the key, as the first factor
        "Accepted password": 1,  # the password: the one completed authentication
        "Accepted publickey": 0,
        "Failed password": 0,
    }


def test_the_key_only_servers_refuse_a_password_and_mfa_a_key_alone(node: LoginNode, tmp_path: Path) -> None:
    program, counter = askpass(tmp_path, remote_password())
    env = {"PATH": "/usr/bin:/bin", "SSH_ASKPASS": str(program), "SSH_ASKPASS_REQUIRE": "force"}

    def ssh(*args: str) -> subprocess.CompletedProcess[str]:
        argv = ["ssh", "-n", "-F", node.config, "-o", "ControlPath=none", *args, "true"]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    for alias in ("corral-login", "corral-jump"):  # the password only: refused, never asked
        refused = ssh("-o", "BatchMode=no", "-o", "PubkeyAuthentication=no", alias)
        assert refused.returncode == 255 and "Permission denied (publickey)" in refused.stderr, refused.stderr
    assert not counter.exists()
    before = mfa_log(node)
    refused = ssh("-o", "BatchMode=yes", "corral-mfa")  # the key alone (as corral's reconnections)
    assert refused.returncode == 255 and "Permission denied (password)" in refused.stderr, refused.stderr
    assert not counter.exists()
    after = mfa_log(node)
    assert after["Partial publickey"] - before["Partial publickey"] == 1
    assert after["Accepted password"] == before["Accepted password"]
