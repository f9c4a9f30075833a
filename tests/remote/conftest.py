"""The loopback login node of the remote tests (scripts/test-sshd.sh): started once per test
session, described by the script's ``env`` (the remote venvs belong to the checkout that runs
the tests, so that a branch's worktree and the main checkout never reinstall each other's)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "test-sshd.sh"


@dataclass(frozen=True)
class LoginNode:
    """Where the test servers keep their state, and what the remote user has."""

    state: Path
    user: str
    python: str  # the remote venv's python, with this checkout's corral (the client's minor)
    python_other: str  # a venv of another Python minor, same corral; may not exist

    @property
    def config(self) -> str:
        """The ssh_config with the aliases corral-login, corral-jump and corral-behind."""
        return str(self.state / "ssh_config")

    @property
    def home(self) -> str:
        return f"/home/{self.user}"

    def logins(self, server: str = "login") -> int:
        """Authentications ``server`` accepted so far (LogLevel VERBOSE writes one line each)."""
        text = (self.state / f"{server}.log").read_text()
        return len(re.findall(rf"Accepted publickey for {self.user}\b", text))


@pytest.fixture(scope="session")
def node() -> LoginNode:
    started = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True)
    if started.returncode != 0:
        pytest.fail(f"test-sshd.sh start failed:\n{started.stdout}\n{started.stderr}")
    said = subprocess.run(["bash", str(SCRIPT), "env"], capture_output=True, text=True, check=True).stdout
    env = dict(line.split("=", 1) for line in said.splitlines() if "=" in line)
    return LoginNode(
        state=Path(env["CORRAL_SSHD_STATE"]),
        user=env["CORRAL_REMOTE_USER"],
        python=env["CORRAL_REMOTE_VENV"] + "/bin/python",
        python_other=env["CORRAL_REMOTE_VENV_OTHER"] + "/bin/python",
    )
