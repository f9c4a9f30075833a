"""Where a front-end's work goes: this machine, or a host reached over SSH (``host=``).

A host is configuration (``[hosts.NAME]``, see :mod:`corral.config`). For a host with
``ssh``, the front-ends get a :class:`~corral.engine.cluster.Cluster` whose backend speaks to
the scheduler of the login node through an :class:`~corral.transports.ssh.SshTransport`: one
per host and interpreter for the whole process, shared by every Executor, Pool, ``@task`` and
``attach`` of it, so that they all go over one session (one authentication). The first use of
a host checks it (:mod:`corral.transports.preflight`: the Python, corral and cloudpickle
versions on both sides, the work dir, private) and that its scheduler answers, before
anything is written there.

What runs there: the jobs' interpreter is the host's ``python`` (or the environment's), they
run in the remote user's home directory, and the work dir is the host's ``directory``, else
``~/.corral`` there, expanded on the host.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ..backends import backend_class, get_backend, resolve_name
from ..backends.base import Backend
from ..config import Settings
from ..engine.cluster import Cluster
from ..errors import ConfigError, SchedulerError
from ..transports.preflight import Preflight, preflight
from ..transports.ssh import SshTransport

#: The work dir on a host whose configuration names none.
REMOTE_DIRECTORY = "~/.corral"
#: The interpreter that runs corral on a host whose configuration names none.
REMOTE_PYTHON = "python3"

_lock = threading.Lock()
_hosts: dict[tuple[str, str | None, str], SshTransport] = {}


@dataclass(frozen=True)
class Remote:
    """A host in use: its transport and what its check found."""

    transport: SshTransport
    found: Preflight


def connect(settings: Settings) -> Remote:
    """The process's session with the host ``settings`` chose (made on first use), checked
    once per work dir (:func:`corral.transports.preflight.preflight` remembers)."""
    assert settings.ssh is not None
    python = settings.environment.python or REMOTE_PYTHON
    key = (settings.ssh, settings.ssh_config, python)
    with _lock:
        transport = _hosts.get(key)
        if transport is None:
            try:
                transport = SshTransport(settings.ssh, python, config=settings.ssh_config)
            except ValueError as exc:
                raise ConfigError(f"host {settings.host!r}: {exc}") from None
            _hosts[key] = transport
    return Remote(transport, preflight(transport, settings.directory or REMOTE_DIRECTORY))


def open_cluster(settings: Settings, backend: str | Backend | None = None) -> Cluster:
    """A new engine for the ``settings`` of a front-end: a Backend instance as given, else
    the configured backend on this machine or on the chosen host."""
    if isinstance(backend, Backend) and settings.clusters is not None:
        raise ConfigError(
            f"clusters={settings.clusters!r} and a Backend instance cannot go together: make the "
            "backend with it (SlurmBackend(transport, clusters=...)), or give the backend's name"
        )
    if settings.ssh is None:
        chosen = (
            backend
            if isinstance(backend, Backend)
            else get_backend(settings.backend, clusters=settings.clusters)
        )
        return Cluster(chosen, settings.directory)
    if isinstance(backend, Backend):
        raise ConfigError(
            f"host {settings.host!r} and a Backend instance cannot go together: the host's "
            "backend is made for its session; give the backend's name instead"
        )
    if settings.backend not in ("auto", "slurm", "sge"):
        raise ConfigError(
            f"host {settings.host!r} is reached over ssh, where backend={settings.backend!r} cannot "
            "run: its jobs would be this machine's processes; use 'auto', 'slurm' or 'sge'"
        )
    remote = connect(settings)
    return Cluster(
        host_backend(settings, remote), remote.found.directory,
        python=settings.environment.python or remote.found.python, chdir=remote.found.home,
    )  # fmt: skip


def host_backend(settings: Settings, remote: Remote, name: str | None = None) -> Backend:
    """The backend ``name`` (default: the configured one; ``auto`` asks the host) on the
    host, whose scheduler must answer: a SchedulerError naming the host otherwise."""
    requested = name or settings.backend
    chosen = resolve_name(requested, remote.transport)
    cls = backend_class(chosen)
    available = getattr(cls, "available", None)
    answered = requested == "auto" and chosen != "local"  # auto chose it because it answered
    if available is None or not (answered or available(remote.transport)):
        raise SchedulerError(
            f"the {chosen} scheduler does not answer on host {settings.host!r} ({settings.ssh}): "
            f"check that its commands work there for {remote.found.user}"
        )
    # auto chose another scheduler: the cluster setting is left out, as get_backend does
    clusters = settings.clusters if chosen == "slurm" or requested != "auto" else None
    return get_backend(chosen, remote.transport, clusters=clusters)
