"""The keys of corral's configuration and the one check of their values, shared by every layer
(``set_defaults()``, the files read by :mod:`corral.config_files`, the environment variables and
``resolve()``'s options; see :mod:`corral.config` for the layers). Pure.

A value is converted once, where it enters, to its canonical form (a ``timedelta`` for ``time``,
MB for ``memory``, a tuple of lines for ``setup``, ...): the layers then merge canonical values.
Resources and the job's environment own their friendly forms and checks
(:meth:`corral.resources.Resources.from_options`, :meth:`corral.environment.Environment.from_options`).

``directory`` and ``python`` name places on a machine: they are checked where they enter but
read as places (``~``, a path relative to a file) only once :mod:`corral.config` knows which
machine they are on (:func:`localized`): on a host reached over ssh they stay as written.

``host`` names a ``[hosts.NAME]`` table (False: no host). Such a table takes the keys below but
``host``, and two of its own: ``ssh``, the destination as OpenSSH reads it, and ``ssh_config``,
a file for ``ssh -F`` (a place on this machine).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import fields

from . import environment, suggestions
from .environment import Environment, env_vars
from .errors import ConfigError, ResourceError
from .resources import Resources

RESOURCE_KEYS = tuple(f.name for f in fields(Resources))
ENVIRONMENT_KEYS = environment.KEYS
#: Every key allowed in set_defaults(), a config file, a profile, or resolve()'s options.
KEYS = (
    *RESOURCE_KEYS, "backend", "directory", "max_retries", "submit_budget", "keep", *ENVIRONMENT_KEYS, "host",
    "clusters",
)  # fmt: skip
#: The keys of a [hosts.NAME] table.
HOST_KEYS = (*(k for k in KEYS if k != "host"), "ssh", "ssh_config")
#: Keys whose options merge one by one across the layers (False removes one a lower layer set).
MERGED = ("extra", "env")
#: Keys that name a place on a machine (see the module doc).
PLACES = ("directory", "python")
#: The values of ``keep``: which batch folders stay once their results are in (see
#: corral.frontends.retention); unset, each front-end has its own default.
KEEP_CHOICES = ("all", "failed", "none")
#: The lowest layer.
BUILT_IN: dict[str, object] = {
    "backend": "auto", "directory": None, "max_retries": 3, "submit_budget": 500, "host": None, "keep": None,
    "clusters": None,
}  # fmt: skip
#: The only CORRAL_* variables read here: the others (CORRAL_IN_JOB, ...) belong to other parts.
#: Of the job's environment only the interpreter has one: lines of shell do not fit a variable.
ENV = {
    k: "CORRAL_DIR" if k == "directory" else f"CORRAL_{k.upper()}"
    for k in KEYS
    if k not in MERGED and (k not in ENVIRONMENT_KEYS or k == "python") and k != "singleton"
}
#: Keys whose variable is read as a whole number.
INT_KEYS = frozenset(
    {"cpus", "nodes", "tasks", "max_retries", "submit_budget", "max_requeues", "signal_grace"}
)
_CLUSTER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: An ssh destination, as the ``ssh`` key and :meth:`corral.transports.ssh.SshTarget.parse`
#: read it (one pattern for both, taken whole with ``fullmatch``): ``[user@]host[:port]`` or a
#: Host alias of ``~/.ssh/config``. Never an option: a text starting with ``-`` is refused.
SSH_DESTINATION = re.compile(
    r"(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?"
)


def ssh_destination(text: str) -> re.Match[str] | None:
    """The parts of ``text`` as an ssh destination (groups ``user``, ``host``, ``port``), or
    None when it is not one (an option like ``-oProxyCommand=...``, a newline, any blank)."""
    return None if text.startswith("-") else SSH_DESTINATION.fullmatch(text)


def convert(key: str, value: object) -> object:
    """The canonical form of one value; raises ResourceError or ConfigError (without location)."""
    if key == "extra" and isinstance(value, Mapping):
        # False is kept as a mark: it removes the option from the layers below (Resources,
        # which sees one layer, reads it as "left out"); the names are checked all the same
        removed = {str(k): False for k, v in value.items() if v is False}
        kept = {k: v for k, v in value.items() if v is not False}
        return dict(Resources.from_options(extra={**kept, **dict.fromkeys(removed)}).extra) | removed
    if key in RESOURCE_KEYS:  # Resources owns the friendly forms ("1:00:00", "4G") and the checks
        return getattr(Resources.from_options(**{key: value}), key)
    if key in ENVIRONMENT_KEYS:
        return _environment_value(key, value)
    if key == "backend":
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"backend={value!r} must be a backend name, such as 'auto', 'local' or 'slurm'")
        return value.strip()
    if key in ("directory", "ssh_config"):
        text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{key}={value!r} must be a path")
        if any(not c.isprintable() for c in text):  # it reaches job scripts, log names, argv
            raise ConfigError(f"{key}={value!r} holds a control character")
        return text
    if key == "host":
        if value is False:  # no host, whatever a lower layer chose
            return value
        if not isinstance(value, str) or not value.strip() or not value.isprintable():
            raise ConfigError(f"host={value!r} must be the name of a [hosts.NAME] table, or false (no host)")
        return value
    if key == "clusters":
        return _cluster_name(value)
    if key == "keep":
        if value not in KEEP_CHOICES:
            choices = ", ".join(map(repr, KEEP_CHOICES))
            raise ConfigError(f"keep={value!r} must be one of {choices} (which batch folders stay)")
        return value
    if key == "ssh":
        found = ssh_destination(value) if isinstance(value, str) else None
        if found is None or not 0 < int(found["port"] or 22) < 65536:  # -oProxyCommand=... is no host
            raise ConfigError(
                f"ssh={value!r} is not an ssh destination: give a Host alias of ~/.ssh/config, "
                "or [user@]host[:port]"
            )
        return value
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{key}={value!r} must be a whole number, 0 or more")
    return value


def _cluster_name(value: object) -> str:
    """One SLURM cluster name (``-M``): job ids are numbered per cluster, so one engine
    follows the jobs of one cluster; a list or ``all`` would make an id ambiguous."""
    if isinstance(value, str) and "," in value:
        raise ConfigError(
            f"clusters={value!r}: name one cluster; job ids are numbered per cluster, so corral "
            "follows one cluster per Executor, Pool or task (use one of each per cluster)"
        )
    if not isinstance(value, str) or not _CLUSTER.fullmatch(value) or value == "all":
        raise ConfigError(
            f"clusters={value!r} must be the name of one SLURM cluster, as 'sacctmgr list clusters' shows it"
        )
    return value


def _environment_value(key: str, value: object) -> object:
    if key == "env" and isinstance(value, Mapping):  # False marks a removal, as in extra
        removed = {str(k): False for k, v in value.items() if v is False}
        env_vars(dict.fromkeys(removed, ""))  # the names are checked all the same
        kept = {k: v for k, v in value.items() if v is not False}
        return dict(Environment.from_options(env=kept).env) | removed
    if key == "python" and isinstance(value, os.PathLike):
        value = os.fspath(value)
    return getattr(Environment.from_options(**{key: value}), key)


def localized(key: str, value: str, folder: str | None) -> str:
    """A place (``directory``, ``python``) as this machine reads it: ``~`` expanded, and a
    relative path read from a file joined to the file's ``folder``, so that a project's work
    dir or venv does not follow the working directory. A ``python`` without a ``/`` is a name
    the node looks up on its PATH, and stays one."""
    text = os.path.expanduser(value)
    if folder is None or (key == "python" and "/" not in text):
        return text
    return os.path.join(folder, text)


def checked(
    key: str, value: object, where: str, unknown: type[Exception], known: tuple[str, ...] = KEYS
) -> object:
    """:func:`convert` for a key read from ``where``, which errors name; a key not ``known``
    raises ``unknown``. Without ``where`` (explicit options) errors pass as they are; None
    stays None."""
    if key not in known:
        raise unknown(
            f"{where}: unknown key {hint(key)}"
            if where
            else f"unknown resource option {hint(key, note=suggestions.FRONT_END_NOTE)}"
        )
    if value is None or not where:
        return None if value is None else convert(key, value)
    try:
        return convert(key, value)
    except (ResourceError, ConfigError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def hint(key: str, where: str = "", known: tuple[str, ...] = KEYS, note: str = "") -> str:
    """``key`` with what the user may have meant and the ``known`` keys (see :mod:`corral.suggestions`)."""
    return suggestions.unknown(key, known, where=where, note=note)
