"""What ssh, the remote shell and the remote python say when a session cannot start
(corral.transports.ssh_text), read from recorded output (tests/data/ssh/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.transports.ssh_text import SshFailure, classify, explain, key_line

DATA = Path(__file__).resolve().parents[1] / "data" / "ssh"
LOGIN = ["ssh", "-F", "/c", "-o", "ControlMaster=auto", "corral-login", "true"]


def said(name: str) -> str:
    return (DATA / f"{name}.stderr").read_text()


@pytest.mark.parametrize(
    ("name", "failure", "line"),
    [
        ("host_key_unknown", SshFailure.HOST_KEY_UNKNOWN, "No ED25519 host key is known for"),
        ("host_key_changed", SshFailure.HOST_KEY_CHANGED, "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!"),
        ("login_publickey", SshFailure.LOGIN, "corralr@127.0.0.1: Permission denied (publickey)."),
        ("connection_refused", SshFailure.UNREACHABLE, "port 2299: Connection refused"),
        ("unknown_hostname", SshFailure.UNREACHABLE, "Could not resolve hostname no-such-host.invalid"),
        ("connect_timeout", SshFailure.UNREACHABLE, "Connection timed out during banner exchange"),
        ("no_python", SshFailure.NO_PYTHON, "/nope/bin/python: No such file or directory"),
        ("python_not_executable", SshFailure.NO_PYTHON, "/etc/shadow: Permission denied"),
        ("no_corral", SshFailure.NO_CORRAL, "No module named 'corral'"),
    ],
)
def test_each_recorded_failure_is_read_as_its_kind(name: str, failure: SshFailure, line: str) -> None:
    assert classify(said(name)) is failure
    assert line in key_line(said(name))


def test_what_no_pattern_knows_is_other() -> None:
    assert classify("") is SshFailure.OTHER and classify("Killed\n") is SshFailure.OTHER
    assert key_line("a\nKilled\n") == "Killed"


def explained(name: str, reconnecting: bool = False) -> str:
    return explain(
        said(name), host="corral-login", python="/v/bin/python", login=LOGIN, reconnecting=reconnecting
    )


def test_what_a_person_reads_names_the_host_quotes_ssh_and_says_what_to_run() -> None:
    text = explained("login_publickey", reconnecting=True)
    assert "ssh cannot log in to corral-login without you ('corralr@127.0.0.1: Permission denied" in text
    assert "run `ssh -F /c -o ControlMaster=auto corral-login true` in a terminal" in text
    assert "corral reconnects by itself once that works" in text
    assert "then try again" in explained("login_publickey")
    changed = explained("host_key_changed")
    assert "the host key of corral-login has CHANGED" in changed and "never accepts a changed key" in changed
    assert '`ssh-keygen -f "/tmp/x/changed_kh" -R "[127.0.0.1]:2222"`' in changed
    unknown = explained("host_key_unknown")
    assert "does not know the host key of corral-login" in unknown and "never accepts one itself" in unknown
    assert "corral-login has no Python at /v/bin/python ('bash: line 1: /nope/bin/python: No such" in (
        explained("no_python")
    )
    assert "/v/bin/python on corral-login has no corral (" in explained("no_corral")
    assert "cannot reach corral-login ('ssh: connect to host 127.0.0.1 port 2299: Connection refused')" in (
        explained("connection_refused")
    )
    assert "ended at once ('Killed')" in explain("Killed", host="h", python="p", login=LOGIN)
