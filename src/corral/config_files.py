"""Finding, reading and checking corral's config files (layers 3 to 5 of :mod:`corral.config`).

- the user file: ``$XDG_CONFIG_HOME/corral/config.toml`` (``~/.config/corral/config.toml``);
- the project file: the nearest ``corral.toml``, or ``pyproject.toml`` with ``[tool.corral]``,
  from the working directory upward (``corral.toml`` wins in one folder, and ends the walk).

A file holds settings at its top level, ``[profiles.NAME]`` tables of the same keys, and
``[hosts.NAME]`` tables of the keys a host takes (:data:`corral.config_keys.HOST_KEYS`).

A file is read only when its owner and mode say it is the user's (:mod:`corral.config_trust`),
checked whole (every key of every table, whether selected or not) and kept until it changes.
The walk up from a working directory is made once per directory in a process.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from .config_keys import HOST_KEYS, KEYS, checked, hint
from .config_trust import distrust, warn_ignored
from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

# The configuration's one logger: turning on "corral.config" shows which files are read.
logger = logging.getLogger("corral.config")

_cache_lock = threading.Lock()
_files: dict[str, tuple[tuple[int, ...], File | None]] = {}  # path -> (version, parsed)
_walks: dict[str, tuple[tuple[Path, bool], ...]] = {}  # cwd -> project file candidates


@dataclass(frozen=True)
class File:
    """One config file, parsed and checked: its own settings, its profiles and its hosts."""

    path: str
    base: Mapping[str, object]
    profiles: Mapping[str, Mapping[str, object]]
    hosts: Mapping[str, Mapping[str, object]]

    @property
    def folder(self) -> str:
        """The file's folder: relative paths in the file are relative to it."""
        return os.path.dirname(self.path)


def read() -> tuple[Path, list[File]]:
    """Where the user file is looked for, and the files that count: the user file, then the
    project file, each if there is one and it is trusted."""
    user_path = user_file()
    user = load(user_path, pyproject=False)
    nearest_first = (load(path, pyproject=pp) for path, pp in project_candidates())
    project = next((f for f in nearest_first if f is not None), None)
    return user_path, [f for f in (user, project) if f is not None]


def user_file() -> Path:
    """Where the user file is looked for (read at call time: ``HOME`` and ``XDG_CONFIG_HOME``)."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):  # the XDG spec says to ignore a relative value
        base = os.path.join(os.path.expanduser("~"), ".config")
    return Path(base, "corral", "config.toml")


def project_candidates() -> tuple[tuple[Path, bool], ...]:
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


def load(path: Path, *, pyproject: bool) -> File | None:
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


def _parse(path: Path, stream: BinaryIO, pyproject: bool) -> File | None:
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
    base = {k: v for k, v in table.items() if k not in ("profiles", "hosts")}
    return File(
        str(path),
        _layer(path, f"[{prefix[:-1]}]" if prefix else "", base, (*KEYS, "profiles", "hosts")),
        _tables(path, prefix, "profiles", table.get("profiles", {}), KEYS),
        _tables(path, prefix, "hosts", table.get("hosts", {}), HOST_KEYS),
    )


def _tables(
    path: Path, prefix: str, kind: str, tables: object, known: tuple[str, ...]
) -> dict[str, Mapping[str, object]]:
    """The ``[profiles.NAME]`` or ``[hosts.NAME]`` tables of a file, each checked."""
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: [{prefix}{kind}] must be a table of {kind}, not {tables!r}")
    checked_tables: dict[str, Mapping[str, object]] = {}
    for name, body in tables.items():
        if not isinstance(body, dict):
            raise ConfigError(
                f"{path}: {kind[:-1]} {name!r} must be a table [{prefix}{kind}.{name}], not {body!r}"
            )
        checked_tables[name] = _layer(path, f"[{prefix}{kind}.{name}]", body, known)
    return checked_tables


def _layer(path: Path, table: str, raw: Mapping[str, object], known: tuple[str, ...]) -> dict[str, object]:
    """Check one table of a file (its top level, a profile or a host) that takes ``known`` keys."""
    where = f" in {table}" if table else " at the top level"
    layer: dict[str, object] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{path}: unknown key {hint(key, where, known)}")
        layer[key] = checked(key, value, f"{path}: key {key!r}{where}", ConfigError, known)
    return layer
