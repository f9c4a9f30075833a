"""Resources a job asks for, as one typed, validated value shared by every backend.

``Resources.from_options(**options)`` is the single door from user keywords: it converts
friendly forms (``time="1:30:00"``, ``memory="4G"``) and rejects unknown or malformed options
with a :class:`~corral.errors.ResourceError` before anything is submitted. Options corral does
not model go verbatim through ``extra={"mail-type": "END"}``; they are checked for shape only.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import timedelta

from .errors import ResourceError

_WORD = re.compile(r"[^\s\"'\\#`$;]+")  # no blanks, quotes, comments or shell metacharacters
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
    }
)  # fmt: skip


#: A call resumes from its checkpoint after at most this many time limits, unless set.
DEFAULT_MAX_REQUEUES = 3
#: Seconds before the time limit that a job is warned, unless set (SLURM may send the signal
#: up to a minute late: it looks at time limits about every 30 s).
DEFAULT_SIGNAL_GRACE = 120


def parse_time(value: object) -> timedelta:
    """Read a time limit: a ``timedelta``, whole minutes (int), or SLURM's text forms
    ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``."""
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, int) and not isinstance(value, bool):
        result = timedelta(minutes=value)
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
        result = timedelta(days=int(days or 0), hours=h, minutes=m, seconds=s)
    else:
        raise ResourceError(
            f"time={value!r} is not a time limit: use minutes (int), a timedelta, "
            "or a SLURM time such as '30', '1:30:00' or '2-00:00:00'"
        )
    if result <= timedelta(0):
        raise ResourceError(f"time={value!r} must be positive")
    return result


def parse_memory(value: object) -> int:
    """Read a memory request in megabytes: an int (MB) or text such as ``'4G'``, ``'512M'``."""
    if isinstance(value, int) and not isinstance(value, bool):
        megabytes = float(value)
    elif isinstance(value, str) and (match := _MEMORY.fullmatch(value.strip())):
        megabytes = float(match.group(1)) * _MEMORY_UNIT_MB[match.group(2).lower()]
    else:
        raise ResourceError(f"memory={value!r} is not a memory size: use MB (int) or '4G', '500M'")
    if megabytes < 1:
        raise ResourceError(f"memory={value!r} must be at least 1 MB")
    return int(-(-megabytes // 1))


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
        for name in ("partition", "account", "qos", "constraint", "job_name"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and _WORD.fullmatch(value)):
                raise ResourceError(
                    f"{name}={value!r} must be non-empty text without blanks, quotes, "
                    "'#', '$', ';' or backticks"
                )
        if self.gpus is not None and not _GPUS.fullmatch(self.gpus):
            raise ResourceError(f"gpus={self.gpus!r} must be a count or 'type:count'")
        for key, value in self.extra:
            if not _OPTION_NAME.fullmatch(key):
                raise ResourceError(
                    f"extra option {key!r} is malformed: give the long option name "
                    "without dashes, e.g. {'mail-type': 'END'}"
                )
            if key in RESERVED_OPTIONS:
                raise ResourceError(
                    f"extra option {key!r} is set by corral or has a typed field; "
                    "use the named resource instead"
                )
            if value is not None and not _WORD.fullmatch(value):
                raise ResourceError(f"extra option {key}={value!r} has blanks or quotes")

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
        known = {f.name for f in fields(cls)}
        for key in options:
            if key not in known:
                hint = difflib.get_close_matches(key, sorted(known), n=1)
                also = f"; did you mean {hint[0]!r}?" if hint else ""
                raise ResourceError(
                    f"unknown resource option {key!r}{also} "
                    f"(known: {', '.join(sorted(known))}; anything else goes in extra={{...}})"
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
            values["extra"] = tuple((str(k), None if v is None else str(v)) for k, v in extra.items())
        return cls(**values)  # type: ignore[arg-type]

    def merged(self, **options: object) -> Resources:
        """A copy with ``options`` (user keywords) laid over these values."""
        update = Resources.from_options(**options)
        changes = {f.name: getattr(update, f.name) for f in fields(update)}
        changes = {k: v for k, v in changes.items() if v not in (None, ())}
        return replace(self, **changes)
