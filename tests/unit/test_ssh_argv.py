"""What corral asks of the ssh client (corral.transports.ssh): destinations read strictly, one
shared master connection, host keys left to the user's config, and the agent's command line
quoted word by word, the only text a remote shell reads."""

from __future__ import annotations

import shlex

import pytest

from corral.transports.ssh import SshTarget, ssh_argv


@pytest.mark.parametrize(
    ("text", "host", "user", "port"),
    [
        ("cluster", "cluster", None, None),
        ("alice@login.hpc.example.org", "login.hpc.example.org", "alice", None),
        ("alice@10.0.0.5:2222", "10.0.0.5", "alice", 2222),
        ("bob@[::1]:22", "[::1]", "bob", 22),
    ],
)
def test_a_destination_is_an_alias_or_user_at_host_port(
    text: str, host: str, user: str | None, port: int | None
) -> None:
    target = SshTarget.parse(text)
    assert (target.host, target.user, target.port) == (host, user, port) and str(target) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-oProxyCommand=touch /tmp/x",
        "a b",
        "alice@",
        "@host",
        "host:0",
        "host:70000",
        "h;rm -rf ~",
        "h$(id)",
        "host\n",  # the whole text, to its end: one pattern with the config's ssh key
    ],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="ssh destination|out of range"):
        SshTarget.parse(text)


def test_the_command_shares_one_master_checks_host_keys_and_quotes_the_remote_argv() -> None:
    remote = ["/opt/my env/bin/python", "-m", "corral.transports.agent", "$(touch x)", "`id`"]
    argv = ssh_argv(
        SshTarget.parse("alice@login:2222"), remote, sockets="/run/user/1000/corral/ssh", config="/c"
    )
    assert argv[:3] == ["ssh", "-F", "/c"] and "-T" in argv
    options = [argv[i + 1] for i, word in enumerate(argv) if word == "-o"]
    assert "ControlMaster=auto" in options and "ControlPath=/run/user/1000/corral/ssh/%C" in options
    assert not any(o.lower().startswith(("stricthostkeychecking", "userknownhostsfile")) for o in options)
    assert argv[argv.index("-l") + 1] == "alice" and argv[argv.index("-p") + 1] == "2222"
    assert argv[-3:-1] == ["--", "login"]
    assert shlex.split(argv[-1]) == remote  # what the remote shell reads back is the argv, word by word


def test_sessions_after_the_first_never_ask_and_never_add_a_host_key() -> None:
    from corral.transports.ssh import SshTransport

    transport = SshTransport("alice@login:2222", "/opt/venv/bin/python", config="/c")
    first, later = transport.argv, transport.reconnect_argv
    options = [later[i + 1] for i, word in enumerate(later) if word == "-o"]
    assert {"BatchMode=yes", "StrictHostKeyChecking=yes", "ConnectTimeout=30"} <= set(options)
    assert not any(word.startswith(("BatchMode", "StrictHostKeyChecking")) for word in first)
    assert later[-3:] == first[-3:] and later[:3] == first[:3] == ["ssh", "-F", "/c"]
    login = transport.login_command()
    assert login[:3] == ["ssh", "-F", "/c"] and login[-2:] == ["login", "true"] and "-T" not in login
    assert f"ControlPath={transport.sockets}/%C" in login and "BatchMode=yes" not in login
