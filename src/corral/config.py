"""One configuration precedence shared by every corral front-end.

Each setting (the :class:`~corral.resources.Resources` fields; ``backend``, ``directory``,
``max_retries`` and ``submit_budget``; the job's :class:`~corral.environment.Environment`:
``setup``, ``env``, ``python``, ``post``, ``srun``, ``launcher``, ``per_task``) is looked up in
these layers; a later one wins::

    #  layer              where it comes from
    1  built-in defaults  backend "auto", max_retries 3, submit_budget 500
    2  code               set_defaults(...)
    3  user file          $XDG_CONFIG_HOME/corral/config.toml   (~/.config/corral/config.toml)
    4  project file       corral.toml, or pyproject.toml [tool.corral]: nearest from cwd upward
    5  profile            [profiles.NAME]: the user file's, then the project file's
    6  environment        CORRAL_BACKEND, CORRAL_DIR, CORRAL_TIME, CORRAL_PYTHON, ...
    7  options            keywords given to a function or call

A later layer replaces a key whole, except ``extra`` and ``env``, whose options (variables)
merge one by one (one set to False removes it). ``directory`` and ``python`` given as relative
paths in a file are relative to its folder (a ``python`` without ``/`` is a name on the node's
PATH); ``~`` is expanded. Files 3 and 4 are read only when the user or root owns them and no
one else can write them; others are ignored with a warning (:mod:`corral.config_trust`).
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
    came from (a file path, ``"profile 'gpu' in PATH"``, a variable name, ``"set_defaults()"``
    or ``"options"``); ``extra`` options and ``env`` variables are listed one by one as
    ``"extra.NAME"`` and ``"env.NAME"``, and
    ``"profile"`` says what chose the profile (``"argument"`` or ``"CORRAL_PROFILE"``)."""

    resources: Resources
    backend: str
    directory: str | None  # None: the engine's default
    max_retries: int
    submit_budget: int  # 0: no budget
    profile: str | None
    environment: Environment = NO_ENVIRONMENT  # what runs around the worker on the node
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
    profile is ``profile``, else ``$CORRAL_PROFILE``, else none.

    Problems in files, profiles or variables raise ConfigError naming where they are. An
    unknown or malformed option raises ResourceError, as the front-ends' keywords always did
    (ConfigError for a malformed ``backend``, ``directory``, ``max_retries``, ``submit_budget``)."""
    with _defaults_lock:
        layers = [_Layer("set_defaults()", dict(_defaults))]
    user_path, files = config_files.read()
    layers += [_Layer(f.path, f.base, os.path.dirname(f.path)) for f in files]

    chosen_by = "argument"
    if profile is None:
        profile, chosen_by = os.environ.get("CORRAL_PROFILE", "").strip() or None, "CORRAL_PROFILE"
    if profile is not None:
        if not isinstance(profile, str) or not profile:
            raise ConfigError(f"profile={profile!r} must be the name of a profile")
        if not any(profile in f.profiles for f in files):
            raise ConfigError(_no_such_profile(profile, files, user_path))
        layers += [
            _Layer(f"profile {profile!r} in {f.path}", f.profiles[profile], os.path.dirname(f.path))
            for f in files
            if profile in f.profiles
        ]
    layers += _env_layers()
    layers.append(
        _Layer("options", {k: checked(k, v, "", ResourceError) for k, v in options.items() if v is not None})
    )

    values, merged, sources = _merge(layers)
    if profile is not None:
        sources["profile"] = chosen_by
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
        sources=MappingProxyType(sources),
    )


def _merge(layers: list[_Layer]) -> tuple[dict[str, object], dict[str, dict[str, Any]], dict[str, str]]:
    """The layers laid one over the other, lowest first: the values of the keys, the merged
    keys' options (``extra``, ``env``) and where each came from. Places are read as places
    here, where the file they came from is known."""
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
            if key in PLACES and value is not None:
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
            elif value != getattr(default, key):
                rows.append(
                    (key, _toml(value) if key != "srun" else _inline_table(value) if value else "true")
                )
            continue
        value = getattr(settings.resources if key in RESOURCE_KEYS else settings, key)
        if key == "extra":
            rows += [(f"extra.{k}", "true" if v is None else _toml(v)) for k, v in value]
        elif key in BUILT_IN or value is not None:
            rows.append((key, _show(key, value)))
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


def _inline_table(pairs: tuple[tuple[str, str | None], ...]) -> str:
    """Options as a TOML inline table, None (a bare flag) as true."""
    return "{ " + ", ".join(f"{k} = {'true' if v is None else _toml(v)}" for k, v in pairs) + " }"


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


def _no_such_profile(name: str, files: list[config_files.File], user_path: Path) -> str:
    defined = sorted({p for f in files for p in f.profiles})
    hint = difflib.get_close_matches(name, defined, n=1)
    return (
        f"profile {name!r} is not defined{f'; did you mean {hint[0]!r}?' if hint else ''} "
        f"(profiles defined: {', '.join(map(repr, defined)) or 'none'}; files read: "
        f"{', '.join(f.path for f in files) or 'none'}; looked for {user_path}, and for corral.toml "
        f"or a pyproject.toml with [tool.corral] from {os.getcwd()} upward)"
    )
