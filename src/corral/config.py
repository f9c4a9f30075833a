"""One configuration precedence shared by every corral front-end.

Each setting (the :class:`~corral.resources.Resources` fields; ``backend``, ``directory``,
``max_retries`` and ``submit_budget``; the job's :class:`~corral.environment.Environment`:
``setup``, ``env``, ``python``, ``post``, ``srun``, ``launcher``, ``per_task``; ``host``;
``clusters``, the SLURM cluster of every command, ``-M``) is
looked up in these layers; a later one wins::

    #  layer              where it comes from
    1  built-in defaults  backend "auto", max_retries 3, submit_budget 500, no host
    2  code               set_defaults(...)
    3  user file          $XDG_CONFIG_HOME/corral/config.toml   (~/.config/corral/config.toml)
    4  project file       corral.toml, or pyproject.toml [tool.corral]: nearest from cwd upward
    5  profile            [profiles.NAME]: the user file's, then the project file's
    6  host               [hosts.NAME] of the host chosen: the user file's, then the project file's
    7  environment        CORRAL_BACKEND, CORRAL_DIR, CORRAL_TIME, CORRAL_PYTHON, CORRAL_HOST, ...
    8  options            keywords given to a function or call

A later layer replaces a key whole, except ``extra`` and ``env``, whose options (variables)
merge one by one (one set to False removes it). ``directory`` and ``python`` given as relative
paths in a file are relative to its folder (a ``python`` without ``/`` is a name on the node's
PATH); ``~`` is expanded. Files 3 and 4 are read only when the user or root owns them and no
one else can write them; others are ignored with a warning (:mod:`corral.config_trust`).

The key ``host`` (in any layer but 6; ``host = false`` for none) chooses a host: a named set of
settings for one machine, with ``ssh`` (a Host alias of ``~/.ssh/config`` or
``user@host[:port]``) when jobs go there over ssh, and ``ssh_config`` (a file for ``ssh -F``).
A host defined in both files merges key by key, the project's over the user's, as a profile
does: the user says how to reach the machine, the project what its jobs need there. On a host
with ``ssh``, ``directory`` and ``python`` are places on that host: only layers 6 to 8 set
them, as written (``~`` is the remote home), and those of layers 2 to 5 are ignored; without
one, ``directory`` is None and the caller takes its default on the remote host.

:func:`resolve` merges the layers into :class:`Settings`; :func:`describe` shows where each
value came from. This module is the door; the keys and the check of their values are
:mod:`corral.config_keys`, finding and reading the files :mod:`corral.config_files`.
"""

from __future__ import annotations

import difflib
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple, cast

from . import config_files
from .config_keys import (
    BUILT_IN,
    ENV,
    ENVIRONMENT_KEYS,
    INT_KEYS,
    KEYS,
    MERGED,
    PLACES,
    RESOURCE_KEYS,
    checked,
    localized,
)
from .config_trust import ConfigWarning as ConfigWarning  # public here: the warning of this layer
from .environment import NO_ENVIRONMENT, Environment
from .errors import ConfigError, ResourceError
from .resources import Resources

__all__ = ["KEYS", "ConfigWarning", "Settings", "describe", "reset_defaults", "resolve", "set_defaults"]

_defaults: dict[str, object] = {}  # set_defaults(), values already converted
_defaults_lock = threading.Lock()


@dataclass(frozen=True)
class Settings:
    """The merged configuration. ``sources`` says, for each key some layer set, where its value
    came from (a file path, ``"profile 'gpu' in PATH"``, ``"host 'hpc' in PATH"``, a variable
    name, ``"set_defaults()"`` or ``"options"``); ``extra`` options and ``env`` variables are
    listed one by one as ``"extra.NAME"`` and ``"env.NAME"``, ``"profile"`` says what chose the
    profile (``"argument"`` or ``"CORRAL_PROFILE"``) and ``"host"`` what chose the host. A
    ``directory`` or ``python`` ignored because the host is remote keeps its source, marked
    ``"..., ignored: ..."``."""

    resources: Resources
    backend: str
    directory: str | None  # None: the engine's default
    max_retries: int
    submit_budget: int  # 0: no budget
    profile: str | None
    environment: Environment = NO_ENVIRONMENT  # what runs around the worker on the node
    host: str | None = None  # the [hosts.NAME] chosen
    ssh: str | None = None  # its ssh destination; None: jobs are submitted from this machine
    ssh_config: str | None = None  # the file for ``ssh -F`` (an absolute path on this machine)
    clusters: str | None = None  # the SLURM cluster (``-M``) of every command; None: the default one
    keep: str | None = None  # which batch folders stay (corral.frontends.retention); None: the front-end's
    sources: Mapping[str, str] = field(default_factory=dict, hash=False)


def set_defaults(**options: object) -> None:
    """Set process-wide defaults in code, the lowest layer after the built-in ones. Keys and
    values are checked at once (ConfigError); a later call overrides the keys it names, and
    ``key=None`` removes a key."""
    values = {k: checked(k, v, "set_defaults()", ConfigError) for k, v in options.items()}
    with _defaults_lock:  # all checked before any is stored: a bad call changes nothing
        for key, value in values.items():
            if options[key] is None:
                _defaults.pop(key, None)
            else:
                _defaults[key] = value


def reset_defaults() -> None:
    """Forget everything :func:`set_defaults` set (for tests)."""
    with _defaults_lock:
        _defaults.clear()


class _Layer(NamedTuple):
    """One layer's values (already converted), with what ``sources`` names it by."""

    source: str
    values: Mapping[str, object]
    folder: str | None = None  # a file's folder: places in the file are relative to it


def resolve(profile: str | None = None, **options: object) -> Settings:
    """Merge every layer into :class:`Settings`. ``options`` are the explicit options of a
    function or call (the highest layer); an option given as None counts as not given. The
    profile is ``profile``, else ``$CORRAL_PROFILE``, else none; the host is the ``host`` of
    the highest layer that names one (``host=False``: none).

    Problems in files, profiles, hosts or variables raise ConfigError naming where they are.
    An unknown or malformed option raises ResourceError, as the front-ends' keywords always did
    (ConfigError for a malformed ``backend``, ``directory``, ``max_retries``, ``submit_budget``
    or ``host``)."""
    with _defaults_lock:
        below = [_Layer("set_defaults()", dict(_defaults))]
    user_path, files = config_files.read()
    below += [_Layer(f.path, f.base, f.folder) for f in files]
    profile, chosen_by = _chosen_profile(profile, files, user_path)
    if profile is not None:
        below += [
            _Layer(f"profile {profile!r} in {f.path}", f.profiles[profile], f.folder)
            for f in files
            if profile in f.profiles
        ]
    above = _env_layers()
    above.append(
        _Layer("options", {k: checked(k, v, "", ResourceError) for k, v in options.items() if v is not None})
    )
    host, hosted = _host_layers([*below, *above], files, user_path)
    remote = any("ssh" in layer.values for layer in hosted)
    ignored: dict[str, str] = {}
    if remote:  # a place on this machine means nothing there
        ignored = {k: layer.source for layer in below for k in PLACES if k in layer.values}
        below = [
            _Layer(layer.source, {k: v for k, v in layer.values.items() if k not in PLACES})
            for layer in below
        ]

    values, merged, sources = _merge([*below, *hosted, *above], remote)
    for key, source in ignored.items():
        sources.setdefault(key, f"{source}, ignored: a local path, and host {host!r} is remote")
    if profile is not None:
        sources["profile"] = chosen_by
    if values.get("ssh_config") is not None and values.get("ssh") is None:
        raise ConfigError(f"host {host!r} has ssh_config ({sources['ssh_config']}) but no ssh destination")
    environment = {k: values[k] for k in ENVIRONMENT_KEYS if values.get(k) is not None}
    return Settings(
        resources=Resources.from_options(
            **{k: values.get(k) for k in RESOURCE_KEYS if k != "extra"}, extra=merged["extra"]
        ),
        backend=cast(str, values["backend"]),
        directory=cast("str | None", values["directory"]),
        max_retries=cast(int, values["max_retries"]),
        submit_budget=cast(int, values["submit_budget"]),
        profile=profile,
        environment=Environment(**environment, env=tuple(merged["env"].items())),  # type: ignore[arg-type]
        host=host,
        ssh=cast("str | None", values.get("ssh")),
        ssh_config=cast("str | None", values.get("ssh_config")),
        clusters=cast("str | None", values.get("clusters")),
        keep=cast("str | None", values.get("keep")),
        sources=MappingProxyType(sources),
    )


def _chosen_profile(
    profile: str | None, files: list[config_files.File], user_path: Path
) -> tuple[str | None, str]:
    """The profile to apply and what chose it; ConfigError for one no file defines."""
    chosen_by = "argument"
    if profile is None:
        profile, chosen_by = os.environ.get("CORRAL_PROFILE", "").strip() or None, "CORRAL_PROFILE"
    if profile is not None:
        if not isinstance(profile, str) or not profile:
            raise ConfigError(f"profile={profile!r} must be the name of a profile")
        if not any(profile in f.profiles for f in files):
            defined = {p for f in files for p in f.profiles}
            raise ConfigError(_not_defined("profile", profile, "", defined, files, user_path))
    return profile, chosen_by


def _host_layers(
    layers: list[_Layer], files: list[config_files.File], user_path: Path
) -> tuple[str | None, list[_Layer]]:
    """The host the highest of ``layers`` names (None for none, or False), and its tables:
    the user file's, then the project file's over it, key by key as profiles merge."""
    layer = next((layer for layer in reversed(layers) if "host" in layer.values), None)
    if layer is None or layer.values["host"] is False:
        return None, []
    host = cast(str, layer.values["host"])
    tables = [_Layer(f"host {host!r} in {f.path}", f.hosts[host], f.folder) for f in files if host in f.hosts]
    if not tables:
        defined = {h for f in files for h in f.hosts}
        raise ConfigError(_not_defined("host", host, f" (from {layer.source})", defined, files, user_path))
    return host, tables


def _merge(
    layers: list[_Layer], remote: bool
) -> tuple[dict[str, object], dict[str, dict[str, Any]], dict[str, str]]:
    """The layers laid one over the other, lowest first: the values of the keys, the merged
    keys' options (``extra``, ``env``) and where each came from. Places are read as places
    here, where the file they came from is known: on this machine, unless the host is
    ``remote`` (there they stay as written, for the remote host to read)."""
    values: dict[str, object] = dict(BUILT_IN)
    merged: dict[str, dict[str, Any]] = {key: {} for key in MERGED}
    sources: dict[str, str] = {}
    for layer in layers:
        for key, value in layer.values.items():
            if key in MERGED:  # option by option; False removes one a lower layer set
                for name, item in cast(Mapping[str, object], value).items():
                    if item is False:
                        merged[key].pop(name, None)
                        sources.pop(f"{key}.{name}", None)
                    else:
                        merged[key][name], sources[f"{key}.{name}"] = item, layer.source
                continue
            if value is not None and (key == "ssh_config" or (key in PLACES and not remote)):
                value = localized(key, cast(str, value), layer.folder)
            values[key], sources[key] = value, layer.source
    return values, merged, sources


def describe(settings: Settings) -> str:
    """A readable summary, one setting a line with its source, e.g.
    ``partition = 'gpu'    (profile 'gpu' in /home/u/.config/corral/config.toml)``. Each line
    is in the form a config file takes, so that it can be pasted into one."""
    rows: list[tuple[str, str]] = []
    default = NO_ENVIRONMENT
    for key in KEYS:
        if key in ENVIRONMENT_KEYS:
            value = getattr(settings.environment, key)
            if key == "env":
                rows += [(f"env.{k}", _toml(v)) for k, v in value]
            elif value != getattr(default, key) or key in settings.sources:  # set, or set back
                rows.append((key, _srun(value) if key == "srun" else _toml(value)))
            continue
        value = getattr(settings.resources if key in RESOURCE_KEYS else settings, key)
        if key == "extra":
            rows += [(f"extra.{k}", "true" if v is None else _toml(v)) for k, v in value]
        elif key in BUILT_IN or value is not None:
            rows.append((key, _show(key, value)))
    rows += [(key, _toml(getattr(settings, key))) for key in ("ssh", "ssh_config") if getattr(settings, key)]
    rows.append(("profile", repr(settings.profile)))
    lines = [(f"{key} = {text}", settings.sources.get(key, "built-in default")) for key, text in rows]
    width = max(len(left) for left, _ in lines)
    return "\n".join(f"{left:<{width}}    ({source})" for left, source in lines)


def _show(key: str, value: object) -> str:
    if isinstance(value, timedelta):
        hours, seconds = divmod(int(value.total_seconds()), 3600)
        clock = f"{hours % 24:02}" if hours >= 24 else str(hours)
        return repr(
            f"{str(hours // 24) + '-' if hours >= 24 else ''}{clock}:{seconds // 60:02}:{seconds % 60:02}"
        )
    return _toml(f"{value}M") if key == "memory" else _toml(value)


def _toml(value: object) -> str:
    """``value`` as TOML writes it; None (a default left to the engine) as ``None``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):  # a literal string when that is Python's repr, else a basic one
        text = repr(value)
        return text if text.startswith("'") and "\\" not in text else json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return repr(value)


def _srun(options: tuple[tuple[str, str | None], ...] | None) -> str:
    """``srun`` as a file sets it: false (no step), true (no options) or a table of options."""
    if not options:
        return "false" if options is None else "true"
    return "{ " + ", ".join(f"{k} = {'true' if v is None else _toml(v)}" for k, v in options) + " }"


def _env_layers() -> list[_Layer]:
    """The environment layer, a layer a variable, read on every call: a job's environment is
    not the shell's."""
    layers: list[_Layer] = []
    for key, var in ENV.items():
        text = os.environ.get(var, "").strip()
        if not text:
            continue
        try:
            value: object = int(text) if key in INT_KEYS else text
        except ValueError:
            raise ConfigError(f"environment variable {var}={text!r} must be a whole number") from None
        layers.append(
            _Layer(var, {key: checked(key, value, f"environment variable {var}={text!r}", ConfigError)})
        )
    return layers


def _not_defined(
    kind: str, name: str, chosen: str, defined: set[str], files: list[config_files.File], user_path: Path
) -> str:
    """Why the profile or host ``name`` cannot be used: which there are, the nearest one, and
    where they were looked for."""
    hint = difflib.get_close_matches(name, sorted(defined), n=1)
    return (
        f"{kind} {name!r}{chosen} is not defined{f'; did you mean {hint[0]!r}?' if hint else ''} "
        f"({kind}s defined: {', '.join(map(repr, sorted(defined))) or 'none'}; files read: "
        f"{', '.join(f.path for f in files) or 'none'}; looked for {user_path}, and for corral.toml "
        f"or a pyproject.toml with [tool.corral] from {os.getcwd()} upward)"
    )
