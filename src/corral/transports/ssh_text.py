"""What ``ssh`` (and the remote shell, and the remote python) say when a session cannot start,
read by pure functions: which kind of failure it is (:func:`classify`, a table of patterns
tried in order) and what a person should do about it (:func:`explain`). Tested on recorded
output (tests/data/ssh).

Which failures are waited on is the transport's decision (:mod:`.pipe`: none for a first
session, all for later ones, with what to do said once); this module only reads the text.
"""

from __future__ import annotations

import enum
import re
import shlex
from collections.abc import Sequence


class SshFailure(enum.Enum):
    """Why a session could not start."""

    UNREACHABLE = "unreachable"  # no connection: DNS, refused, timed out, reset, closed early
    LOGIN = "login"  # the server refused every way of logging in ssh could try without a person
    HOST_KEY_UNKNOWN = "host key unknown"  # no known_hosts entry, and ssh may not ask to add one
    HOST_KEY_CHANGED = "host key changed"  # the server's key is not the one known_hosts holds
    NO_PYTHON = "no python"  # the remote shell found no such interpreter (or cannot run it)
    NO_CORRAL = "no corral"  # the interpreter runs but has no corral (or one without the agent)
    OTHER = "other"  # anything else: the agent or ssh ended saying something we do not know


#: (pattern, failure), tried in order: the first that matches a line of the output wins. A
#: changed key says "Host key verification failed" too, so it comes before an unknown one;
#: the remote shell's "Permission denied" has no "(methods)" after it, ssh's login refusal has.
_SAYS: Sequence[tuple[re.Pattern[str], SshFailure]] = [
    (re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed|POSSIBLE DNS SPOOFING"),
     SshFailure.HOST_KEY_CHANGED),
    (re.compile(r"host key is known for|Host key verification failed"), SshFailure.HOST_KEY_UNKNOWN),
    (re.compile(r"Permission denied \(|Too many authentication failures|[Aa]uthentication failed"),
     SshFailure.LOGIN),
    (re.compile(r"No module named '?corral\b"), SshFailure.NO_CORRAL),
    (re.compile(r": (No such file or directory|command not found|Permission denied)$"), SshFailure.NO_PYTHON),
    (re.compile(
        r"Could not resolve hostname|Temporary failure in name resolution|Connection refused|timed out"
        r"|No route to host|Network is unreachable|Connection reset|Connection closed by"
        r"|kex_exchange_identification|Broken pipe|not responding|Connection to .* closed"
    ), SshFailure.UNREACHABLE),
]  # fmt: skip


def classify(said: str) -> SshFailure:
    """The kind of failure the output ``said`` reports (:data:`SshFailure.OTHER` if none)."""
    return _match(said)[0]


def key_line(said: str) -> str:
    """The line of ``said`` that tells the failure (its last line when none does)."""
    return _match(said)[1]


def _match(said: str) -> tuple[SshFailure, str]:
    lines = [line.strip() for line in said.replace("\r", "").splitlines() if line.strip()]
    for pattern, failure in _SAYS:
        for line in lines:
            if pattern.search(line):
                return failure, line
    return SshFailure.OTHER, lines[-1] if lines else ""


def explain(said: str, *, host: str, python: str, login: Sequence[str], reconnecting: bool = False) -> str:
    """A sentence or two for a person: what failed on ``host`` (quoting what was said) and
    what to do. ``login``: the ssh command that logs in the way corral does (sharing its
    master connection); ``reconnecting``: the session had worked, corral keeps trying."""
    failure, line = _match(said)
    quoted = f"({line!r})" if line else "(and said nothing)"
    command = shlex.join(login)
    then = "corral reconnects by itself once that works" if reconnecting else "then try again"
    if failure is SshFailure.HOST_KEY_CHANGED:
        remove = next((ln.strip() for ln in said.splitlines() if "ssh-keygen" in ln and " -R " in ln), "")
        how = f"`{remove}`" if remove else "ssh-keygen -R"
        return (
            f"the host key of {host} has CHANGED {quoted}: corral never accepts a changed key. It may be "
            "an attack, or a reinstalled server: ask the cluster's admins for its key fingerprint; if it "
            f"matches, remove the old key with {how} and accept the new one in a terminal with `{command}`; "
            f"{then}"
        )
    if failure is SshFailure.HOST_KEY_UNKNOWN:
        return (
            f"ssh does not know the host key of {host} {quoted}, and corral never accepts one itself: run "
            f"`{command}` in a terminal, check the fingerprint it shows against the one the cluster "
            f"publishes, and accept it; {then}"
        )
    if failure is SshFailure.LOGIN:
        return (
            f"ssh cannot log in to {host} without you {quoted}: run `{command}` in a terminal; it logs in "
            "(asking for what your login needs: a key's passphrase, a password, a code) and leaves a "
            f"master connection that corral's sessions share; load your key with ssh-add, or renew a "
            f"certificate or Kerberos ticket, if that is how you log in; {then}"
        )
    if failure is SshFailure.NO_PYTHON:
        return (
            f"{host} has no Python at {python} {quoted}: give the path of a remote Python that has "
            "corral installed (a venv's bin/python, say)"
        )
    if failure is SshFailure.NO_CORRAL:
        return (
            f"{python} on {host} has no corral {quoted}: install there the corral this process runs "
            f"({python} -m pip install corral==<version>, in a venv of the same Python minor), or give "
            "the path of a remote Python that has it"
        )
    if failure is SshFailure.UNREACHABLE:
        return (
            f"cannot reach {host} {quoted}: check the host name and port, the network or VPN; "
            f"`{command}` must work; {then}"
        )
    return f"corral's agent on {host} ({python}) ended at once {quoted}; `{command}` shows what ssh does"
