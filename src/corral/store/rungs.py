"""Rung records: the early-stopping decisions of a sweep's trials, made and kept on the nodes.

Layout (folders 0700 and the user's alone, see :mod:`corral.trust`; files 0600)::

    <folder>/                          the sweep's rung folder (its parent is checked by the caller)
      <milestone>/                     one folder per milestone some trial reached, e.g. 9/
        <trial>.json                   trial's record there: a RungRecord (value, keep, cutoff,
                                       earlier, ...), created exclusively and whole, never changed
        .<trial>.<pid>.<hex>.tmp       a record being written; every reader skips it (and one a
                                       crash left behind)

How a trial reports (:meth:`Rungs.report`): if its record exists it is the answer, whatever
the value now (a requeued or retried trial gets its first decision). Otherwise the records
present are read, the caller's ``decide`` judges the value against theirs, and the record is
written to a temporary file then hard-linked to ``<trial>.json``. ``link`` fails when the
name exists (so the first attempt of a trial to get there wins, and the others read and return
its record: never two decisions) and makes the name appear with the whole content at once
(so nobody ever reads a record half written). It is atomic on NFS and the parallel file
systems clusters share; ``O_EXCL`` on the final name would be exclusive but not whole.

What a record costs: O(1) to write and to read, whatever the number of trials. It holds
how many numbers its value was compared with (``earlier``), not which trials gave them: a
list of them made each record O(n) bytes and reading a milestone's records O(n²). The
decision stays checkable: under corral's rules ``keep`` agrees with ``value`` against
``cutoff`` in the sweep's mode, and ``earlier`` is at most the number of records made
before it.

Why caching is sound: a record never changes once its name exists, so each :class:`Rungs`
keeps what it read, with the names it has looked at per milestone, and a report costs one
``listdir`` and the files it has not read yet (1000 trials at 5 milestones read each record
once per process, not once per report). A cached record is not checked again.

No ``fsync``: a record is small, written whole and linked, so what a sync before the link
protects against is only a host crash right after it, which can leave the name with content
that never reached the disk: an empty file. That case is handled instead (a sync cost nearly
a tenth of the reporting time): readers take an empty ``<trial>.json`` for absent (not
counted, not an error, looked at again next time), and the trial's own next report replaces
it. A non-empty file that is not a record corral wrote is a FormatError.

What concurrency gives: a trial is compared with the records that existed when it listed the
folder. Two trials reporting at the same instant may not see each other; each is then judged
against what came before its own record, as asynchronous ASHA is. An NFS client may also list
a folder a few seconds stale. Either way a record is judged on at most the records made before
it, and says on how many.

Records are JSON only (never pickle). Floats are written as JSON numbers (exact round trip);
None as null, NaN and infinities as the strings "nan", "inf", "-inf".
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import FormatError
from ..trust import check_private_dir

#: How a caller judges a value: given the values recorded before (in no particular order),
#: it returns (continue?, the cutoff compared with or None).
Decide = Callable[[list[float | None]], tuple[bool, float | None]]

_WORDS = {"nan", "inf", "-inf"}  # the non-finite floats, which JSON numbers cannot hold


@dataclass(frozen=True)
class RungRecord:
    """One trial's report at one milestone, as stored in ``<milestone>/<trial>.json``.

    Note that a record whose value is NaN is not equal to itself read back (NaN != NaN)."""

    trial: int
    attempt: int  #: the attempt (requeue or retry) that made the record
    milestone: int
    value: float | None  #: the metric reported; None or NaN when it was not a number
    keep: bool  #: whether the trial continues
    cutoff: float | None  #: the value it was compared with; None when compared with nothing
    #: How many numbers (not None or NaN) were recorded at the milestone before it: those it
    #: was judged against. A count, so that a record's size does not grow with the sweep.
    earlier: int
    t: float  #: when the decision was made (time.time())

    def __post_init__(self) -> None:
        for name in ("trial", "attempt", "milestone", "earlier"):
            _whole(getattr(self, name), name)
        if not isinstance(self.keep, bool):
            raise ValueError(f"keep must be true or false, not {self.keep!r}")
        for name in ("value", "cutoff"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), float):
                raise ValueError(f"{name} must be a float or None, not {getattr(self, name)!r}")
        if not isinstance(self.t, float) or not math.isfinite(self.t):
            raise ValueError(f"t must be a finite float, not {self.t!r}")

    def to_json(self) -> dict[str, Any]:
        """The record as JSON data; see the module doc for the floats."""
        return {
            "trial": self.trial, "attempt": self.attempt, "milestone": self.milestone,
            "value": _encode(self.value), "keep": self.keep, "cutoff": _encode(self.cutoff),
            "earlier": self.earlier, "t": self.t,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: bytes, path: str) -> RungRecord:
        """The record stored in ``data`` (the bytes of the file ``path``), checked field by
        field: :class:`~corral.errors.FormatError` naming ``path`` for anything
        :meth:`to_json` does not write."""
        try:
            return cls._decode(json.loads(data))
        except (ValueError, TypeError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            raise FormatError(f"{path} is not a corral rung record: {exc}", path=path) from None

    @classmethod
    def _decode(cls, record: object) -> RungRecord:
        if not isinstance(record, dict):
            raise ValueError(f"a JSON {type(record).__name__}, not an object")
        names = {f.name for f in fields(cls)}
        if set(record) != names:
            missing, extra = sorted(names - set(record)), sorted(set(record) - names)
            raise ValueError(f"its fields differ from a rung record's (missing {missing}, unknown {extra})")
        return cls(
            trial=record["trial"], attempt=record["attempt"], milestone=record["milestone"],
            value=_decode(record["value"], "value"), keep=record["keep"],
            cutoff=_decode(record["cutoff"], "cutoff"), earlier=record["earlier"], t=record["t"],
        )  # fmt: skip


@dataclass
class _Rung:
    """What a :class:`Rungs` has read at one milestone; it stays true, records never change."""

    records: dict[int, RungRecord] = field(default_factory=dict)  #: by trial
    #: The names dealt with: records read, and names that are no record (temporary files,
    #: foreign names). Never an empty record: it is looked at again.
    names: set[str] = field(default_factory=set)
    #: The records' values in the order read and how many are numbers, kept as they come so
    #: that a report does not go through every record again.
    values: list[float | None] = field(default_factory=list)
    numbers: int = 0

    def add(self, record: RungRecord, name: str) -> None:
        self.records[record.trial] = record
        self.names.add(name)
        self.values.append(record.value)
        self.numbers += record.value is not None and not math.isnan(record.value)


class Rungs:
    """The rung records under ``folder`` (see the module doc), with what this object has
    read kept in memory. The folder and each milestone folder are checked once, when first
    touched: :class:`~corral.errors.UnsafeWorkDirError` if another user could write them."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._rungs: dict[int, _Rung] = {}  # by milestone
        self._checked: set[str] = set()  # folders found private (they stay so: ours alone)

    def report(
        self, trial: int, attempt: int, milestone: int, value: float | None, decide: Decide
    ) -> RungRecord:
        """``trial``'s record at ``milestone``: the one that exists (made by this or an earlier
        attempt, whatever ``value`` is now), else a new one, judged by ``decide`` on the values
        of the records present (the numbers among them counted in ``earlier``) and created
        exclusively; an empty record of ``trial`` (see the module doc) is replaced.
        :class:`~corral.errors.FormatError` for a record there that corral did not write,
        :class:`~corral.errors.UnsafeWorkDirError` for a folder others can write."""
        _whole(trial, "trial")
        _whole(attempt, "attempt")
        _whole(milestone, "milestone")
        value = _as_float(value, "value")
        known = self._rungs.get(milestone)
        if known is not None and trial in known.records:
            return known.records[trial]
        rung = self._rung(milestone, create=True)
        assert rung is not None  # created
        known = self._refresh(milestone, rung)
        if trial in known.records:
            return known.records[trial]
        keep, cutoff = decide(list(known.values))
        record = RungRecord(
            trial=trial, attempt=attempt, milestone=milestone, value=value, keep=keep,
            cutoff=_as_float(cutoff, "the cutoff decide returned"), earlier=known.numbers, t=time.time(),
        )  # fmt: skip
        record = self._create(rung, record)
        known.add(record, f"{trial}.json")
        return record

    def records(self, milestone: int) -> dict[int, RungRecord]:
        """Every record at ``milestone``, by trial (ascending); empty when none exists."""
        rung = self._rung(milestone, create=False)
        if rung is None:
            return {}
        known = self._refresh(milestone, rung).records
        return {trial: known[trial] for trial in sorted(known)}

    def milestones(self) -> list[int]:
        """The milestones that have a folder, ascending."""
        if not self._private(self.folder, create=False):
            return []
        names = os.listdir(self.folder)
        return sorted(m for m in map(_number, names) if m is not None and self._isdir(m))

    def _isdir(self, milestone: int) -> bool:
        return os.path.isdir(os.path.join(self.folder, str(milestone)))

    def _load(self, path: str) -> bytes:
        """The bytes of a record file (not following a symbolic link); every read goes here."""
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as file:
            return file.read()

    def _read(self, path: str, trial: int, milestone: int) -> RungRecord | None:
        """The record in ``path``, checked; None when the file is empty (see the module doc)."""
        data = self._load(path)
        if not data:
            return None
        record = RungRecord.from_json(data, path)
        if (record.trial, record.milestone) != (trial, milestone):
            raise FormatError(
                f"{path} holds the record of trial {record.trial} at milestone {record.milestone}, "
                f"not of trial {trial} at {milestone}: it was not written by corral",
                path=path,
            )
        return record

    def _refresh(self, milestone: int, rung: str) -> _Rung:
        """What is known of ``milestone``, completed with the records it lacks: one listdir,
        and only the names not dealt with before parsed and read (records never change, see
        the module doc)."""
        known = self._rungs.setdefault(milestone, _Rung())
        for name in set(os.listdir(rung)) - known.names:
            trial = _number(name.removesuffix(".json")) if name.endswith(".json") else None
            if trial is None:
                known.names.add(name)
                continue
            record = self._read(os.path.join(rung, name), trial, milestone)
            if record is not None:  # an empty one is absent until its trial replaces it
                known.add(record, name)
        return known

    def _create(self, rung: str, record: RungRecord) -> RungRecord:
        """Create ``<rung>/<trial>.json`` holding ``record`` whole and exclusively, and return
        it; when another attempt of the trial made it first, return that one's record. An empty
        one (a host crash, see the module doc) is replaced."""
        final = os.path.join(rung, f"{record.trial}.json")
        temp = os.path.join(rung, f".{record.trial}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
        data = json.dumps(record.to_json(), allow_nan=False).encode()
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.link(temp, final)
        except FileExistsError:
            # Another attempt of this trial got there first (or NFS retried our own link and
            # heard "exists"): the record under the name is the decision, whoever wrote it.
            existing = self._read(final, record.trial, record.milestone)
            if existing is not None:
                return existing
            # Empty: the attempt that linked it died with its host before the content reached
            # the disk (see the module doc), and nobody took its decision for one; ours takes
            # the place of the name just read empty. Read back after, so that two attempts
            # replacing at once return the same record; only one that read back before the
            # other replaced would not: two attempts of one trial, right after a host crash,
            # within microseconds of each other.
            os.replace(temp, final)
            existing = self._read(final, record.trial, record.milestone)
            return record if existing is None else existing
        finally:
            _unlink_quietly(temp)
        return record

    def _rung(self, milestone: int, *, create: bool) -> str | None:
        """The folder of ``milestone``, checked (and made, with ``create``); None when it
        does not exist and ``create`` is false."""
        rung = os.path.join(self.folder, str(milestone))
        if not self._private(self.folder, create=create) or not self._private(rung, create=create):
            return None
        return rung

    def _private(self, folder: str, *, create: bool) -> bool:
        """Check ``folder`` once: False when it does not exist (and ``create`` is false)."""
        if folder in self._checked:
            return True
        if create:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        try:
            check_private_dir(folder)
        except FileNotFoundError:
            if create:
                raise
            return False
        self._checked.add(folder)
        return True


def _number(name: str) -> int | None:
    """``"12"`` -> 12; None for any other name (``"012"``, ``".12"``, ``"12.json.tmp"``)."""
    if name.isascii() and name.isdigit() and str(int(name)) == name:
        return int(name)
    return None


def _whole(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, not {value!r}")


def _as_float(value: object, name: str) -> float | None:
    """None, or ``value`` as a float (an int, a numpy float...); ValueError for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number or None, not {value!r}")
    return float(value)


def _encode(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _decode(value: object, name: str) -> float | None:
    if value is None or (isinstance(value, float) and math.isfinite(value)):
        return value
    if isinstance(value, str) and value in _WORDS:
        return float(value)
    raise ValueError(f'{name} must be a number, null, "nan", "inf" or "-inf", not {value!r}')


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass  # already gone; a leftover temporary file is skipped by every reader anyway


__all__ = ["Decide", "RungRecord", "Rungs"]
