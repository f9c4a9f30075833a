"""Resources a job asks for, as one typed, validated value shared by every backend.

``Resources.from_options(**options)`` is the single door from user keywords: it converts
friendly forms (``time="1:30:00"``, ``memory="4G"``) and rejects unknown or malformed options
with a :class:`~corral.errors.ResourceError` before anything is submitted. Options corral does
not model go verbatim through ``extra={"mail-type": "END"}``; they are checked for shape only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import timedelta

from . import directives, suggestions
from .errors import ResourceError

_OPTION_NAME = re.compile(r"[a-z][a-z0-9-]*")
_MEMORY = re.compile(r"(?i)(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?")
_MEMORY_UNIT_MB = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024 * 1024}
_GPUS = re.compile(r"(?:[A-Za-z0-9_.-]+:)?[1-9]\d*")

#: sbatch options corral sets itself (or models as a typed field): not allowed in ``extra``.
RESERVED_OPTIONS = frozenset(
    {
        "array", "output", "error", "parsable", "chdir", "wrap", "job-name", "time",
        "cpus-per-task", "mem", "gres", "gpus", "nodes", "ntasks", "partition", "account",
        "qos", "constraint", "signal", "dependency", "export", "requeue", "no-requeue",
        "kill-on-invalid-dep",
    }
)  # fmt: skip


#: A call resumes from its checkpoint after at most this many time limits, unless set.
DEFAULT_MAX_REQUEUES = 3
#: The longest time limit accepted: SLURM counts minutes in 32 bits and takes far more, but
#: a limit above a year is a typo (seconds given as minutes), and fails only at the scheduler.
MAX_TIME = timedelta(days=365)
#: The largest memory request accepted, in MB: 1 PB, more than any node has.
MAX_MEMORY_MB = 1024**3
#: Seconds before the time limit that a job is warned, unless set (SLURM may send the signal
#: up to a minute late: it looks at time limits about every 30 s).
DEFAULT_SIGNAL_GRACE = 120


def parse_time(value: object) -> timedelta:
    """Read a time limit: a ``timedelta``, whole minutes (int), or SLURM's text forms
    ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``; at most MAX_TIME."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value * 60
    elif isinstance(value, str) and re.fullmatch(r"(\d+-)?\d+(:\d+){0,2}", value.strip()):
        text = value.strip()
        days, _, clock = text.rpartition("-")
        parts = [int(p) for p in clock.split(":")]
        if days:  # D-HH[:MM[:SS]]
            h, m, s = parts + [0] * (3 - len(parts))
        elif len(parts) == 1:  # MM
            h, m, s = 0, parts[0], 0
        else:  # MM:SS | HH:MM:SS
            h, m, s = ([0, *parts])[-3:]
        seconds = ((int(days or 0) * 24 + h) * 60 + m) * 60 + s
    else:
        raise ResourceError(
            f"time={value!r} is not a time limit: use minutes (int), a timedelta, "
            "or a SLURM time such as '30', '1:30:00' or '2-00:00:00'"
        )
    if seconds <= 0:
        raise ResourceError(f"time={value!r} must be positive")
    # Compared as numbers first: timedelta() overflows (OverflowError) on the digits of a typo
    if seconds > MAX_TIME.total_seconds():
        raise ResourceError(
            f"time={value!r} is more than {MAX_TIME.days} days, the longest time limit corral "
            "asks for; leave time unset for the partition's default"
        )
    return value if isinstance(value, timedelta) else timedelta(seconds=seconds)


def parse_memory(value: object) -> int:
    """Read a memory request in megabytes: an int (MB) or text such as ``'4G'``, ``'512M'``;
    at most MAX_MEMORY_MB."""
    if isinstance(value, int) and not isinstance(value, bool):
        megabytes = float(value)
    elif isinstance(value, str) and (match := _MEMORY.fullmatch(value.strip())):
        megabytes = float(match.group(1)) * _MEMORY_UNIT_MB[match.group(2).lower()]
    else:
        raise ResourceError(f"memory={value!r} is not a memory size: use MB (int) or '4G', '500M'")
    if megabytes < 1:
        raise ResourceError(f"memory={value!r} must be at least 1 MB")
    if megabytes > MAX_MEMORY_MB:  # inf, from a string of 400 digits, included
        raise ResourceError(
            f"memory={value!r} is more than 1 PB ({MAX_MEMORY_MB} MB), more than any node has"
        )
    return int(-(-megabytes // 1))


def extra_options(extra: Mapping[object, object]) -> tuple[tuple[str, str | None], ...]:
    """``extra={...}`` as (name, value) pairs: True or None is the bare flag (``--exclusive``),
    False leaves the option out, anything else is written as text (``str(value)``)."""
    return tuple(
        (str(k), None if v is None or v is True else str(v)) for k, v in extra.items() if v is not False
    )


def check_max_running(value: object, name: str = "max_running") -> int | None:
    """``value`` as the most calls running at once: None (no limit) or a whole number >= 1;
    a ResourceError naming ``name`` otherwise (``"3"`` included: no silent conversion)."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ResourceError(
            f"{name}={value!r} must be a whole number of calls, at least 1 (or None: no limit)"
        )
    return value


@dataclass(frozen=True, kw_only=True)
class Resources:
    """What one array element asks the scheduler for. All fields are optional."""

    time: timedelta | None = None  # wall-time limit
    cpus: int | None = None  # CPUs per task
    memory: int | None = None  # MB per node
    gpus: str | None = None  # count, or "type:count"
    nodes: int | None = None
    tasks: int | None = None  # tasks (MPI ranks) per job
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None  # node features, e.g. "avx512&ib"
    job_name: str | None = None
    # At most one job of this job name and user runs at a time (SLURM's --dependency=singleton)
    singleton: bool | None = None
    # Requeues from a checkpoint at the time limit, per call (0: jobs are never requeued)
    max_requeues: int | None = None
    signal_grace: int | None = None  # seconds before the time limit the warning signal comes
    extra: tuple[tuple[str, str | None], ...] = ()  # verbatim options: (name, value or None)

    def __post_init__(self) -> None:
        for name in ("cpus", "nodes", "tasks", "memory"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ResourceError(f"{name}={value!r} must be a positive whole number")
        for name in ("max_requeues", "signal_grace"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ResourceError(f"{name}={value!r} must be a whole number >= 0")
        if self.singleton is not None and not isinstance(self.singleton, bool):
            raise ResourceError(f"singleton={self.singleton!r} must be True or False")
        if self.time is not None:  # the bound, for resources built without from_options
            if not isinstance(self.time, timedelta):
                raise ResourceError(
                    f"time={self.time!r} must be a timedelta (from_options reads other forms)"
                )
            parse_time(self.time)
        if self.memory is not None:
            parse_memory(self.memory)
        for name in ("partition", "account", "qos", "constraint", "job_name", "gpus"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, str):
                    raise ResourceError(f"{name}={value!r} must be text")
                directives.check_text(name, value)
        if self.gpus is not None and not _GPUS.fullmatch(self.gpus):
            raise ResourceError(f"gpus={self.gpus!r} must be a count or 'type:count'")
        for key, value in self.extra:
            if not (isinstance(key, str) and _OPTION_NAME.fullmatch(key)):
                raise ResourceError(
                    f"extra option {key!r} is malformed: give the long option name "
                    "without dashes, e.g. {'mail-type': 'END'}"
                )
            if key in RESERVED_OPTIONS:
                raise ResourceError(
                    f"extra option {key!r} is set by corral or has a typed field; "
                    "use the named resource instead"
                )
            if value is not None:
                if not isinstance(value, str):
                    raise ResourceError(f"extra option {key}={value!r} must be text, or None for a bare flag")
                directives.check_text(f"extra option {key}", value)

    @property
    def requeues(self) -> int:
        """``max_requeues``, or its default."""
        return DEFAULT_MAX_REQUEUES if self.max_requeues is None else self.max_requeues

    def warning_seconds(self) -> int | None:
        """How long before the time limit the job asks to be warned: ``signal_grace`` (default
        DEFAULT_SIGNAL_GRACE), at most half the limit; None without a limit or requeues."""
        if self.time is None or not self.requeues:
            return None
        grace = DEFAULT_SIGNAL_GRACE if self.signal_grace is None else self.signal_grace
        return max(1, min(grace, int(self.time.total_seconds()) // 2))

    @classmethod
    def from_options(cls, **options: object) -> Resources:
        """Build resources from user keywords, converting friendly forms; unknown keys fail."""
        known = [f.name for f in fields(cls)]
        for key in options:
            if key not in known:
                note = "anything else goes in extra={...}"
                raise ResourceError(
                    f"unknown resource option {suggestions.unknown(key, known, label='known', note=note)}"
                )
        values: dict[str, object] = {k: v for k, v in options.items() if v is not None}
        if "time" in values:
            values["time"] = parse_time(values["time"])
        if "memory" in values:
            values["memory"] = parse_memory(values["memory"])
        if "gpus" in values:
            values["gpus"] = str(values["gpus"])
        if "extra" in values:
            extra = values["extra"]
            if not isinstance(extra, Mapping):
                raise ResourceError("extra must be a mapping of option name to value (or None)")
            values["extra"] = extra_options(extra)
        return cls(**values)  # type: ignore[arg-type]

    def merged(self, **options: object) -> Resources:
        """A copy with ``options`` (user keywords) laid over these values."""
        update = Resources.from_options(**options)
        changes = {f.name: getattr(update, f.name) for f in fields(update)}
        changes = {k: v for k, v in changes.items() if v not in (None, ())}
        return replace(self, **changes)
