"""Preflight of a remote host (an :class:`~corral.transports.pipe.AgentTransport`): before
anything is written there, check that its agent starts, that pickles made on either side
load on the other, and that the work dir is there and private.

Pickles (cloudpickle's, of functions, arguments and results) travel both ways, so both sides
need the same Python minor, the same corral and the same cloudpickle. :func:`mismatch` is the
pure comparison, :func:`unanswered` the pure check that the agent answers every operation this
corral sends, and :func:`preflight` the one function that talks (once per transport and work
dir in a process). Every failure is a :class:`~corral.errors.PreflightError` that names the
host and the python, quotes what was said and says what to do; the work dir is resolved
*there* (``~`` and ``$VARS`` are the remote user's) and created private (0700), or refused
(:class:`~corral.errors.UnsafeWorkDirError`) when it is not.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import PreflightError
from .agent import OPS, hello
from .pipe import AgentLost, AgentTransport


@dataclass(frozen=True)
class Versions:
    """What one side runs, of what pickles depend on."""

    python: tuple[int, int, int]
    corral: str  # "" when not installed as a package
    cloudpickle: str  # "" when missing
    implementation: str = "cpython"

    @classmethod
    def of(cls, said: Mapping[str, Any]) -> Versions:
        """From what an agent's ``hello`` said (:func:`corral.transports.agent.hello`)."""
        python = said.get("python")
        if not (isinstance(python, list) and len(python) == 3 and all(type(n) is int for n in python)):
            raise PreflightError(f"the agent's hello has no Python version: {dict(said)!r}")
        return cls(
            (python[0], python[1], python[2]),
            str(said.get("corral", "")),
            str(said.get("cloudpickle", "")),
            str(said.get("implementation", "cpython")),
        )

    @classmethod
    def here(cls) -> Versions:
        """This process's."""
        return cls.of(hello())

    @property
    def minor(self) -> str:
        return f"{self.python[0]}.{self.python[1]}"

    def __str__(self) -> str:
        name = "Python" if self.implementation == "cpython" else self.implementation
        corral = f"corral {self.corral}" if self.corral else "a corral of no known version"
        pickler = f"cloudpickle {self.cloudpickle}" if self.cloudpickle else "no cloudpickle"
        return f"{name} {'.'.join(map(str, self.python))} with {corral} and {pickler}"


def mismatch(there: Versions, here: Versions, *, host: str, python: str) -> str | None:
    """Why pickles cannot travel between ``python`` on ``host`` (``there``) and this process
    (``here``), and what to do; None when they can. Pure."""
    other_python = (there.implementation, there.minor) != (here.implementation, here.minor)
    pairs = (("corral", there.corral, here.corral), ("cloudpickle", there.cloudpickle, here.cloudpickle))
    packages = [
        f"{name}=={mine}" if mine else name for name, theirs, mine in pairs if other_python or theirs != mine
    ]
    if not other_python and not packages:
        return None
    what = " ".join(packages)
    if other_python:
        fix = (
            f"make a Python {here.minor} environment there (python{here.minor} -m venv DIR), install "
            f"{what} in it and give its bin/python; or run this process with Python {there.minor}"
        )
    else:
        fix = f"install {what} there ({python} -m pip install {what})"
    return (
        f"{host}'s {python} is {there}; this process runs {here}: pickles go both ways, so both sides need "
        f"the same Python minor, corral and cloudpickle. To fix it, {fix}"
    )


def unanswered(said: Mapping[str, Any], *, host: str, python: str) -> str | None:
    """Why an agent that runs the same versions still cannot serve this client: it does not
    answer every operation this corral sends (a corral of the same version number built from
    other sources, as in development); None when it answers them all. Pure."""
    missing = sorted(OPS - set(said.get("ops") or ()))
    if not missing:
        return None
    return (
        f"{host}'s {python} runs a corral that does not answer {', '.join(missing)}, which this one "
        f"sends: it was installed from other sources than this process's corral. Install the same "
        f"corral there ({python} -m pip install --force-reinstall <this corral's wheel or source>)"
    )


@dataclass(frozen=True)
class Preflight:
    """What preflight found on the remote host."""

    host: str  # the name the host gives itself
    user: str  # the remote user, as the scheduler sees it
    home: str  # its home folder there
    python: str  # the remote interpreter (sys.executable there)
    versions: Versions  # what it runs (the same as this process's, or preflight failed)
    directory: str  # the work dir, resolved there (absolute, ~ and $VARS expanded), private


_done: weakref.WeakKeyDictionary[AgentTransport, dict[str, Preflight]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def preflight(transport: AgentTransport, directory: str, *, here: Versions | None = None) -> Preflight:
    """Check ``transport``'s host and its work dir ``directory`` (see the module doc): once
    per transport and directory in a process, later calls answer from memory. ``here``:
    the versions to compare with (this process's by default). Nothing is created there
    unless every check before the work dir's passed."""
    with _lock:
        found = _done.get(transport, {}).get(directory)
    if found is not None:
        return found
    python = str(getattr(transport, "python", transport.argv[0]))  # an SshTransport's remote python
    try:
        said = transport.hello()
    except AgentLost as lost:
        raise PreflightError(f"preflight: {lost}") from lost
    there = Versions.of(said)
    problem = mismatch(there, here or Versions.here(), host=transport.name, python=python)
    problem = problem or unanswered(said, host=transport.name, python=python)
    if problem is not None:
        raise PreflightError(problem)
    resolved = transport.expand_path(directory)
    transport.makedirs(resolved)
    found = Preflight(
        host=str(said.get("host", "")),
        user=str(said.get("user", "")),
        home=str(said.get("home", "")),
        python=str(said.get("executable", python)),
        versions=there,
        directory=resolved,
    )
    with _lock:
        _done.setdefault(transport, {})[directory] = found
    return found
