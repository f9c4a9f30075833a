"""A sweep's folder: the only code that knows its file names and record layouts.

::

    <work dir>/sweeps/<name>/            0700, made by the driver before anything is submitted
        sweep.json                       the manifest: what was asked (metric, mode, scheduler,
                                         search and its seed, every trial's config as JSON) and
                                         the batches that run the trials; written whole
                                         (temporary file, then rename) by the driver
        configs/<trial>.json             the config values a model-based search chose for the
                                         trial (by dotted key path), written by the driver as
                                         slots free up; a trial waits for its own
        trials/<trial>.log               one JSON line per event of that trial, every attempt:
                                         start, log (step and metrics), end (completed, pruned,
                                         failed); appended on the node, one write per line
        rungs/<milestone>/<trial>.json   the early-stopping decisions (:mod:`corral.store.rungs`)

Trial ids are stable indices (0 .. trials-1), never hashes of configs: two trials with equal
configs are two trials. Everything here is data (JSON), never a pickle, so that readers for
people (``corral sweep status``) may read it; the batches hold the pickled calls. The driver
reads the trial logs through its transport's ``scan`` (the files end in ``.log``): one
request per look, however many trials, each file read from where the last look stopped.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from ..errors import CorralError, FormatError
from ..transports.base import Transport

#: The layout version of a sweep folder; another one is refused, not guessed at.
SWEEP_FORMAT = 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

Kind = Literal["start", "log", "end"]
_KINDS = ("start", "log", "end")
#: How a trial's attempt ended, as its own log says (a crash of the node says nothing).
END_STATES = ("completed", "pruned", "failed", "stopped")
Metric = int | float | str | bool | None


def check_name(name: object) -> str:
    """A sweep's name: a folder name of letters, digits, ``.``, ``_`` and ``-`` (at most
    100, not starting with a dot or dash); ValueError otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"sweep name {name!r}: use letters, digits, '.', '_' and '-' (at most 100, starting "
            "with a letter or digit); it names the sweep's folder"
        )
    return name


def sweep_folder(root: str, name: str) -> str:
    """The folder of sweep ``name`` under the work dir ``root``."""
    return os.path.join(root, "sweeps", check_name(name))


def trials_folder(folder: str) -> str:
    return os.path.join(folder, "trials")


def rungs_folder(folder: str) -> str:
    return os.path.join(folder, "rungs")


def config_path(folder: str, trial: int) -> str:
    return os.path.join(folder, "configs", f"{trial}.json")


def encode_config(values: Mapping[str, Any]) -> bytes:
    return json.dumps({"values": dict(values)}, allow_nan=False).encode()


def decode_config(data: bytes, path: str) -> dict[str, Any]:
    """A chosen config's values by dotted key path; FormatError for a file corral did not write."""
    try:
        record = json.loads(data)
    except ValueError as e:
        raise _bad(path, f"not JSON ({e})") from None
    values = record.get("values") if isinstance(record, dict) else None
    if not isinstance(values, dict) or not all(
        isinstance(v, (int, float, str, bool)) or v is None for v in values.values()
    ):
        raise _bad(path, "not a chosen config (values of None, bool, int, float or str by key)")
    return values


def wait_for_config(folder: str, trial: int, wait: float) -> dict[str, Any] | None:
    """On the node: the values chosen for ``trial``, once the driver has written them; None
    after ``wait`` seconds without them. Looked for every 0.1 s at first, then every second."""
    path = config_path(folder, trial)
    deadline, pause = time.monotonic() + wait, 0.1
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                return None
            time.sleep(pause)
            pause = min(1.0, pause * 1.5)
            continue
        with os.fdopen(fd, "rb") as handle:
            return decode_config(handle.read(), path)


_NO_METRICS: Mapping[str, Metric] = MappingProxyType({})


class TrialEvent(NamedTuple):
    """One line of a trial's log (a named tuple: the driver makes thousands per look)."""

    trial: int
    attempt: int
    kind: Kind
    t: float
    step: float | int | None = None  # log
    metrics: Mapping[str, Metric] = _NO_METRICS  # log
    status: str | None = None  # end: one of END_STATES
    milestone: int | None = None  # end, pruned: where
    error: str | None = None  # end, failed: "TypeName: message"
    node: str | None = None  # start: the host it ran on

    def encode(self) -> bytes:
        """The event as one line of JSON (NaN and infinities as JSON's extensions)."""
        record: dict[str, Any] = {"e": self.kind, "a": self.attempt, "t": self.t}
        for key, value in (
            ("s", self.step), ("m", dict(self.metrics) or None), ("status", self.status),
            ("r", self.milestone), ("error", self.error), ("node", self.node),
        ):  # fmt: skip
            if value is not None:
                record[key] = value
        return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def _bad(path: str, message: str) -> FormatError:
    return FormatError(f"{path}: {message}", path=path)


def _number(value: object, path: str, what: str) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(path, f"{what} is {value!r}, not a number")
    return value


def _text(value: object, path: str, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _bad(path, f"{what} is {value!r}, not text")
    return value


def decode_event(trial: int, line: bytes, path: str) -> TrialEvent:
    """One line of ``path`` (trial ``trial``'s log) as its event; FormatError for a line
    corral does not write."""
    try:
        record = json.loads(line)
    except ValueError as e:
        raise _bad(path, f"a line is not JSON ({e})") from None
    return _event(trial, record, line, path)


def decode_events(trial: int, lines: list[bytes], path: str) -> list[TrialEvent]:
    """Whole lines of trial ``trial``'s log as events: parsed as one JSON array (a log holds
    many short lines; the driver reads thousands per look), each line alone when that fails,
    so that the error names the line."""
    try:
        records = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        return [decode_event(trial, line, path) for line in lines]
    return [_event(trial, record, line, path) for record, line in zip(records, lines, strict=True)]


def _event(trial: int, record: object, line: bytes, path: str) -> TrialEvent:
    if not isinstance(record, dict) or record.get("e") not in _KINDS:
        raise _bad(path, f"a line is not a trial event: {line[:80]!r}")
    attempt, t = record.get("a"), _number(record.get("t"), path, "t")
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 0 or t is None:
        raise _bad(path, f"a line has no attempt or time: {line[:80]!r}")
    metrics = record.get("m") or {}
    if not isinstance(metrics, dict) or not all(
        isinstance(v, (int, float, str, bool)) or v is None for v in metrics.values()
    ):
        raise _bad(path, f"a line's metrics are not numbers or text: {line[:80]!r}")
    milestone = record.get("r")
    if milestone is not None and (not isinstance(milestone, int) or isinstance(milestone, bool)):
        raise _bad(path, f"a line's milestone is {milestone!r}")
    status = _text(record.get("status"), path, "status")
    if status is not None and status not in END_STATES:
        raise _bad(path, f"a line's status is {status!r}")
    return TrialEvent(
        trial, attempt, record["e"], float(t), step=_number(record.get("s"), path, "step"),
        metrics=metrics, status=status, milestone=milestone,
        error=_text(record.get("error"), path, "error"), node=_text(record.get("node"), path, "node"),
    )  # fmt: skip


def split_lines(data: bytes) -> tuple[list[bytes], int]:
    """The whole lines of ``data`` and how many bytes they take: a line a writer is still
    writing is left for the next read."""
    end = data.rfind(b"\n") + 1
    return [line for line in data[:end].split(b"\n") if line], end


def trial_of_log(name: str) -> int | None:
    """The trial a file of ``trials/`` is the log of (None: not one)."""
    stem, dot, ext = name.partition(".")
    return int(stem) if dot and ext == "log" and stem.isdigit() else None


class TrialLog:
    """A trial's log, appended on the node: one ``os.write`` per event on a descriptor
    opened with ``O_APPEND``, so that lines of one attempt never interleave and a reader
    sees whole lines or none of the last."""

    def __init__(self, folder: str, trial: int) -> None:
        path = os.path.join(trials_folder(folder), f"{trial}.log")
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        self._fd = os.open(path, flags, 0o600)

    def write(self, event: TrialEvent) -> None:
        os.write(self._fd, event.encode())

    def close(self) -> None:
        os.close(self._fd)


def read_trial_log(folder: str, trial: int) -> list[TrialEvent]:
    """Every event of a trial's log, read on this host (the worker, when an attempt starts,
    to learn what earlier attempts reported)."""
    path = os.path.join(trials_folder(folder), f"{trial}.log")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return []
    with os.fdopen(fd, "rb") as handle:
        lines, _ = split_lines(handle.read())
    return decode_events(trial, lines, path)


def _finite(value: object) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


class SweepFiles:
    """The driver's side of a sweep folder, through the transport of the cluster that runs
    the trials (this machine's, or a login node's over SSH)."""

    def __init__(self, root: str, name: str, transport: Transport) -> None:
        self.name = name
        self.path = sweep_folder(root, name)
        self.transport = transport
        self._cursors: dict[str, int] = {}

    @property
    def manifest_path(self) -> str:
        return os.path.join(self.path, "sweep.json")

    def exists(self) -> bool:
        return "sweep.json" in self.transport.listdir(self.path)

    def create(self) -> None:
        """Make the folder and its subfolders (private, checked: see :mod:`corral.trust`)."""
        for path in (
            self.path,
            trials_folder(self.path),
            rungs_folder(self.path),
            os.path.dirname(config_path(self.path, 0)),
        ):
            self.transport.makedirs(path)
        self._cursors.clear()

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Write the manifest whole (NaN refused: people's tools read it)."""
        record = {"format": SWEEP_FORMAT, "written": time.time(), **manifest}
        self.transport.write_bytes(self.manifest_path, json.dumps(record, indent=1, allow_nan=False).encode())

    def read_manifest(self) -> dict[str, Any]:
        """The manifest; FormatError for one corral did not write, or of another format."""
        self.transport.makedirs(self.path)  # checks that the folder is the user's alone
        data = self.transport.read_bytes(self.manifest_path)
        try:
            record = json.loads(data)
        except ValueError as e:
            raise _bad(self.manifest_path, f"not JSON ({e})") from None
        if not isinstance(record, dict) or record.get("format") != SWEEP_FORMAT:
            found = record.get("format") if isinstance(record, dict) else None
            raise _bad(self.manifest_path, f"sweep folder format {found!r}, this corral reads {SWEEP_FORMAT}")
        return record

    def remove(self) -> None:
        """Delete the sweep's folder (``overwrite=True``), through one ``rm -rf`` argv."""
        if not self.path.rstrip("/").endswith(os.path.join("sweeps", self.name)):
            raise CorralError(f"refusing to remove {self.path}: not a sweep folder")
        result = self.transport.run(["rm", "-rf", "--", self.path], timeout=120)
        if result.returncode != 0:
            raise CorralError(f"could not remove the sweep folder {self.path}: {result.stderr.strip()}")
        self._cursors.clear()

    def write_configs(self, configs: Mapping[int, Mapping[str, Any]]) -> None:
        """Write chosen configs (trial -> values by dotted path), in one request."""
        self.transport.write_many([(config_path(self.path, t), encode_config(v)) for t, v in configs.items()])

    def read_configs(self) -> dict[int, dict[str, Any]]:
        """Every chosen config written so far (a resumed model-based sweep's)."""
        folder = os.path.dirname(config_path(self.path, 0))
        found = {}
        for name in self.transport.listdir(folder):
            stem, _, ext = name.partition(".")
            if ext == "json" and stem.isdigit():
                path = os.path.join(folder, name)
                found[int(stem)] = decode_config(self.transport.read_bytes(path), path)
        return found

    def read_events(self) -> dict[int, list[TrialEvent]]:
        """The events the trials logged since the last call (one ``scan``), by trial."""
        folder = trials_folder(self.path)
        found: dict[int, list[TrialEvent]] = {}
        for name, data in self.transport.scan(folder, self._cursors).items():
            trial = trial_of_log(name)
            if trial is None:
                continue
            if not data:  # shorter than we read: a log is only appended to, so start over
                self._cursors[name] = 0
                continue
            lines, used = split_lines(data)
            self._cursors[name] = self._cursors.get(name, 0) + used
            path = os.path.join(folder, name)
            found.setdefault(trial, []).extend(decode_events(trial, lines, path))
        return found

    def read_all_events(self) -> dict[int, list[TrialEvent]]:
        """Every event of every trial, from the start (a fresh reader's view)."""
        self._cursors.clear()
        return self.read_events()


def json_metrics(metrics: Mapping[str, Metric]) -> dict[str, Metric]:
    """Metrics as the manifest may hold them (non-finite numbers as text)."""
    return {k: (v if _finite(v) else str(v)) for k, v in metrics.items()}
