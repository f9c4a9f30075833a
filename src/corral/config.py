"""One configuration precedence shared by every corral front-end.

Each setting (the :class:`~corral.resources.Resources` fields, plus ``backend``, ``directory``,
``max_retries`` and ``submit_budget``) is looked up in these layers; a later one wins::

    #  layer              where it comes from
    1  built-in defaults  backend "auto", max_retries 3, submit_budget 500
    2  code               set_defaults(...)
    3  user file          $XDG_CONFIG_HOME/corral/config.toml   (~/.config/corral/config.toml)
    4  project file       corral.toml, or pyproject.toml [tool.corral]: nearest from cwd upward
    5  profile            [profiles.NAME]: the user file's, then the project file's
    6  environment        CORRAL_BACKEND, CORRAL_DIR, CORRAL_TIME, CORRAL_PARTITION, ...
    7  options            keywords given to a function or call

A later layer replaces a key whole, except ``extra``, whose options merge one by one (an
option set to False removes it). Files 3 and 4 are read only when the user or root owns them
and no one else can write them; others are ignored with a warning (:mod:`corral.config_trust`).
:func:`resolve` merges the layers into :class:`Settings`; :func:`describe` shows where each
value came from.
"""

from __future__ import annotations

import difflib
import logging
import os
import stat
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO, cast

from . import suggestions
from .config_trust import ConfigWarning as ConfigWarning  # public here: the warning of this layer
from .config_trust import distrust, warn_ignored
from .errors import ConfigError, ResourceError
from .resources import Resources

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

logger = logging.getLogger(__name__)


_RESOURCE_KEYS = tuple(f.name for f in fields(Resources))
#: Every key allowed in set_defaults(), a config file, a profile, or resolve()'s options.
KEYS = (*_RESOURCE_KEYS, "backend", "directory", "max_retries", "submit_budget")
_BUILT_IN: dict[str, object] = {"backend": "auto", "directory": None, "max_retries": 3, "submit_budget": 500}
#: The only CORRAL_* variables read here: the others (CORRAL_IN_JOB, ...) belong to other parts.
_ENV = {k: "CORRAL_DIR" if k == "directory" else f"CORRAL_{k.upper()}" for k in KEYS if k != "extra"}
_INT_KEYS = frozenset(
    {"cpus", "nodes", "tasks", "max_retries", "submit_budget", "max_requeues", "signal_grace"}
)

_defaults: dict[str, object] = {}  # set_defaults(), values already converted
_defaults_lock = threading.Lock()
_cache_lock = threading.Lock()
_files: dict[str, tuple[tuple[int, ...], _File | None]] = {}  # path -> (version, parsed)
_walks: dict[str, tuple[tuple[Path, bool], ...]] = {}  # cwd -> project file candidates


@dataclass(frozen=True)
class Settings:
    """The merged configuration. ``sources`` says, for each key some layer set, where its value
    came from (a file path, ``"profile 'gpu' in PATH"``, a variable name, ``"set_defaults()"``
    or ``"options"``); ``extra`` options are listed one by one as ``"extra.NAME"``, and
    ``"profile"`` says what chose the profile (``"argument"`` or ``"CORRAL_PROFILE"``)."""

    resources: Resources
    backend: str
    directory: str | None  # None: the engine's default
    max_retries: int
    submit_budget: int  # 0: no budget
    profile: str | None
    sources: Mapping[str, str] = field(default_factory=dict, hash=False)


def set_defaults(**options: object) -> None:
    """Set process-wide defaults in code, the lowest layer after the built-in ones. Keys and
    values are checked at once (ConfigError); a later call overrides the keys it names, and
    ``key=None`` removes a key."""
    checked = {k: _checked(k, v, "set_defaults()", ConfigError) for k, v in options.items()}
    with _defaults_lock:  # all checked before any is stored: a bad call changes nothing
        for key, value in checked.items():
            if options[key] is None:
                _defaults.pop(key, None)
            else:
                _defaults[key] = value


def reset_defaults() -> None:
    """Forget everything :func:`set_defaults` set (for tests)."""
    with _defaults_lock:
        _defaults.clear()


def resolve(profile: str | None = None, **options: object) -> Settings:
    """Merge every layer into :class:`Settings`. ``options`` are the explicit options of a
    function or call (the highest layer); an option given as None counts as not given. The
    profile is ``profile``, else ``$CORRAL_PROFILE``, else none.

    Problems in files, profiles or variables raise ConfigError naming where they are. An
    unknown or malformed option raises ResourceError, as the front-ends' keywords always did
    (ConfigError for a malformed ``backend``, ``directory``, ``max_retries``, ``submit_budget``)."""
    with _defaults_lock:
        layers: list[tuple[str, Mapping[str, object]]] = [("set_defaults()", dict(_defaults))]
    user_path = _user_file()
    user = _load(user_path, pyproject=False)
    nearest_first = (_load(path, pyproject=pp) for path, pp in _project_candidates())
    project = next((f for f in nearest_first if f is not None), None)
    files = [f for f in (user, project) if f is not None]
    layers += [(f.path, f.base) for f in files]

    chosen_by = "argument"
    if profile is None:
        profile, chosen_by = os.environ.get("CORRAL_PROFILE", "").strip() or None, "CORRAL_PROFILE"
    if profile is not None:
        if not isinstance(profile, str) or not profile:
            raise ConfigError(f"profile={profile!r} must be the name of a profile")
        if not any(profile in f.profiles for f in files):
            raise ConfigError(_no_such_profile(profile, files, user_path))
        layers += [
            (f"profile {profile!r} in {f.path}", f.profiles[profile]) for f in files if profile in f.profiles
        ]

    entries = [(k, v, source) for source, layer in layers for k, v in layer.items()] + _env_entries()
    entries += [
        (k, _checked(k, v, "", ResourceError), "options") for k, v in options.items() if v is not None
    ]
    values: dict[str, object] = dict(_BUILT_IN)
    extra: dict[str, str | None] = {}
    sources: dict[str, str] = {}
    for key, value, source in entries:
        if key == "extra":  # option by option; False removes one a lower layer set
            for name, text in cast(Mapping[str, "str | None | bool"], value).items():
                if text is False:
                    extra.pop(name, None)
                    sources.pop(f"extra.{name}", None)
                else:
                    extra[name], sources[f"extra.{name}"] = cast("str | None", text), source
        else:
            values[key], sources[key] = value, source
    if profile is not None:
        sources["profile"] = chosen_by
    return Settings(
        resources=Resources.from_options(
            **{k: values.get(k) for k in _RESOURCE_KEYS if k != "extra"}, extra=extra
        ),
        backend=cast(str, values["backend"]),
        directory=cast("str | None", values["directory"]),
        max_retries=cast(int, values["max_retries"]),
        submit_budget=cast(int, values["submit_budget"]),
        profile=profile,
        sources=MappingProxyType(sources),
    )


def describe(settings: Settings) -> str:
    """A readable summary, one setting a line with its source, e.g.
    ``partition = 'gpu'    (profile 'gpu' in /home/u/.config/corral/config.toml)``."""
    rows: list[tuple[str, str]] = []
    for key in KEYS:
        value = getattr(settings.resources if key in _RESOURCE_KEYS else settings, key)
        if key == "extra":
            rows += [(f"extra.{k}", "true" if v is None else repr(v)) for k, v in value]
        elif key in _BUILT_IN or value is not None:
            rows.append((key, _show(key, value)))
    rows.append(("profile", repr(settings.profile)))
    lines = [(f"{key} = {text}", settings.sources.get(key, "built-in default")) for key, text in rows]
    width = max(len(left) for left, _ in lines)
    return "\n".join(f"{left:<{width}}    ({source})" for left, source in lines)


def _show(key: str, value: object) -> str:
    # In the form a config file takes, so that a line can be pasted into one.
    if isinstance(value, timedelta):
        hours, seconds = divmod(int(value.total_seconds()), 3600)
        clock = f"{hours % 24:02}" if hours >= 24 else str(hours)
        return repr(
            f"{str(hours // 24) + '-' if hours >= 24 else ''}{clock}:{seconds // 60:02}:{seconds % 60:02}"
        )
    return repr(f"{value}M") if key == "memory" else repr(value)


def _convert(key: str, value: object) -> object:
    """The canonical form of one value; raises ResourceError or ConfigError (without location)."""
    if key == "extra" and isinstance(value, Mapping):
        # False is kept as a mark: it removes the option from the layers below (Resources,
        # which sees one layer, reads it as "left out"); the names are checked all the same
        removed = {str(k): False for k, v in value.items() if v is False}
        kept = {k: v for k, v in value.items() if v is not False}
        return dict(Resources.from_options(extra={**kept, **dict.fromkeys(removed)}).extra) | removed
    if key in _RESOURCE_KEYS:  # Resources owns the friendly forms ("1:00:00", "4G") and the checks
        return getattr(Resources.from_options(**{key: value}), key)
    if key == "backend":
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"backend={value!r} must be a backend name, such as 'auto', 'local' or 'slurm'")
        return value.strip()
    if key == "directory":
        text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"directory={value!r} must be a path")
        if any(not c.isprintable() for c in text):  # it reaches job scripts and log names
            raise ConfigError(f"directory={value!r} holds a control character")
        return os.path.expanduser(text)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{key}={value!r} must be a whole number, 0 or more")
    return value


def _checked(key: str, value: object, where: str, unknown: type[Exception]) -> object:
    """``_convert`` for a key read from ``where``, which errors name; an unknown key raises
    ``unknown``. Without ``where`` (explicit options) errors pass as they are; None stays None."""
    if key not in KEYS:
        raise unknown(
            f"{where}: unknown key {_hint(key)}"
            if where
            else f"unknown resource option {_hint(key, note=suggestions.FRONT_END_NOTE)}"
        )
    if value is None or not where:
        return None if value is None else _convert(key, value)
    try:
        return _convert(key, value)
    except (ResourceError, ConfigError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _hint(key: str, where: str = "", known: tuple[str, ...] = KEYS, note: str = "") -> str:
    return suggestions.unknown(key, known, where=where, note=note)


def _env_entries() -> list[tuple[str, object, str]]:
    """The environment layer, read on every call: a job's environment is not the shell's."""
    entries: list[tuple[str, object, str]] = []
    for key, var in _ENV.items():
        text = os.environ.get(var, "").strip()
        if not text:
            continue
        try:
            value: object = int(text) if key in _INT_KEYS else text
        except ValueError:
            raise ConfigError(f"environment variable {var}={text!r} must be a whole number") from None
        entries.append((key, _checked(key, value, f"environment variable {var}={text!r}", ConfigError), var))
    return entries


@dataclass(frozen=True)
class _File:
    """One config file, parsed and checked: its own settings and its profiles."""

    path: str
    base: Mapping[str, object]
    profiles: Mapping[str, Mapping[str, object]]


def _user_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):  # the XDG spec says to ignore a relative value
        base = os.path.join(os.path.expanduser("~"), ".config")
    return Path(base, "corral", "config.toml")


def _project_candidates() -> tuple[tuple[Path, bool], ...]:
    """Files that may hold the project's config, nearest first, as (path, is_pyproject). The
    walk is done once per working directory; the files themselves are checked on every use."""
    cwd = os.getcwd()
    with _cache_lock:
        found = _walks.get(cwd)
    if found is not None:
        return found
    candidates: list[tuple[Path, bool]] = []
    for folder in (Path(cwd), *Path(cwd).parents):
        corral_toml, pyproject = folder / "corral.toml", folder / "pyproject.toml"
        if corral_toml.is_file():
            candidates.append((corral_toml, False))
            if _has_corral_table(pyproject):  # not checked further: it is ignored, errors and all
                logger.warning(
                    "%s: [tool.corral] is ignored: %s is in the same folder", pyproject, corral_toml
                )
            break
        if pyproject.is_file():
            candidates.append((pyproject, True))
    with _cache_lock:
        _walks[cwd] = tuple(candidates)
    return tuple(candidates)


def _has_corral_table(pyproject: Path) -> bool:
    try:
        with pyproject.open("rb") as stream:
            tool = tomllib.load(stream).get("tool")
    except (OSError, ValueError):  # TOMLDecodeError and UnicodeDecodeError are ValueErrors
        return False
    return isinstance(tool, dict) and "corral" in tool


def _load(path: Path, *, pyproject: bool) -> _File | None:
    """The checked config in ``path``, None if there is none or it is not trusted (see
    :mod:`corral.config_trust`); read again only when it changed. Checked on the open descriptor, so
    the file cannot be swapped between the check and the read."""
    try:  # O_NONBLOCK: a FIFO planted as a config file must not hang the open
        stream = os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from exc
    with stream:
        st = os.fstat(stream.fileno())
        # The owner and mode are part of the version: a chmod that fixes a file counts
        version = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode, st.st_uid)
        with _cache_lock:
            cached = _files.get(str(path))
        if cached is not None and cached[0] == version:
            return cached[1]
        parsed = None
        if stat.S_ISREG(st.st_mode):
            if (why := distrust(st)) is None:
                parsed = _parse(path, stream, pyproject)
            else:
                warn_ignored(path, why)
    with _cache_lock:
        _files[str(path)] = (version, parsed)
    return parsed


def _parse(path: Path, stream: BinaryIO, pyproject: bool) -> _File | None:
    logger.debug("reading corral config from %s", path)
    try:
        data: dict[str, object] = tomllib.load(stream)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    table, prefix = cast(object, data), ""
    if pyproject:
        tool = data.get("tool")
        if not isinstance(tool, dict) or "corral" not in tool:
            return None  # another project's pyproject.toml: keep walking up
        table, prefix = tool["corral"], "tool.corral."
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.corral] must be a table, not {table!r}")
    profiles = table.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: [{prefix}profiles] must be a table of profiles, not {profiles!r}")
    base = _layer(
        path, f"[{prefix[:-1]}]" if prefix else "", {k: v for k, v in table.items() if k != "profiles"}
    )
    checked: dict[str, Mapping[str, object]] = {}
    for name, body in profiles.items():
        if not isinstance(body, dict):
            raise ConfigError(
                f"{path}: profile {name!r} must be a table [{prefix}profiles.{name}], not {body!r}"
            )
        checked[name] = _layer(path, f"[{prefix}profiles.{name}]", body)
    return _File(str(path), base, checked)


def _layer(path: Path, table: str, raw: Mapping[str, object]) -> dict[str, object]:
    """Check one table of a file (its top level or a profile)."""
    where = f" in {table}" if table else " at the top level"
    layer: dict[str, object] = {}
    for key, value in raw.items():
        if key not in KEYS:
            known = KEYS if "profiles." in table else (*KEYS, "profiles")
            raise ConfigError(f"{path}: unknown key {_hint(key, where, known)}")
        layer[key] = _checked(key, value, f"{path}: key {key!r}{where}", ConfigError)
        if key == "directory":  # relative to the file, so a project's work dir does not follow cwd
            layer[key] = os.path.join(path.parent, cast(str, layer[key]))
    return layer


def _no_such_profile(name: str, files: list[_File], user_path: Path) -> str:
    defined = sorted({p for f in files for p in f.profiles})
    hint = difflib.get_close_matches(name, defined, n=1)
    return (
        f"profile {name!r} is not defined{f'; did you mean {hint[0]!r}?' if hint else ''} "
        f"(profiles defined: {', '.join(map(repr, defined)) or 'none'}; files read: "
        f"{', '.join(f.path for f in files) or 'none'}; looked for {user_path}, and for corral.toml "
        f"or a pyproject.toml with [tool.corral] from {os.getcwd()} upward)"
    )
