"""The client–worker protocol: the typed records the client writes for the worker to read,
and the version of the work-dir format they belong to.

* :class:`WorkerPlan` (``subs/<s>.json``): which calls the elements of one submission take
  (:class:`Mode`), what the batch asks of them (strict, stdin, requeues), and what the
  backend hands the worker as data: how to be run again after a time-limit warning
  (:class:`Requeue`) and which environment variable counts the element's restarts. The
  worker names no scheduler: everything scheduler-specific comes through here.
* :class:`ChunkClaim` (``claims/<s>.<pos>``): who took the positions ``pos..pos+n-1`` of
  submission s's task list (a :class:`Claim`: an element, or the client's cancel), and n.
* :data:`BEAT`: how often a running element writes a heartbeat into its stream.
* :data:`FORMAT_VERSION`, written into every batch's ``manifest.json`` ("format"), and
  :func:`check_format`, which every reader (the worker, ``attach``, ``corral status``) calls
  before reading anything else of a batch. Version 1 is the format without a version: every
  batch written before the version was recorded.

Everything here is read back from a work dir, so it is untrusted: a reader validates every
field and raises :class:`~corral.errors.FormatError` naming the file, never anything else.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from ..errors import FormatError, FormatVersionError
from .launching import JOB_ID as JOB_ID  # the backends take it from here
from .launching import Ranks as Ranks  # the plan carries them; the backends make them
from .launching import Requeue as Requeue
from .launching import _bool, _env_name, _int

#: The work-dir format this corral writes and reads. 1: no "format" in the manifest (the
#: plan a dict of strings, requeue named by scheduler); 2: this module's records.
FORMAT_VERSION = 2


# Element ids are made by corral ("4242_0", "L3_1"); nothing else is taken from a claim, so
# that a planted one cannot name a log outside the batch's logs folder.
_ELEMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*", re.ASCII)
_PID_LIMIT = 2**31  # pids are C ints; a larger number is not one
_CANCEL_TEXT = b"client-cancel"

#: Seconds between two heartbeats (Beat records) of a running element: the client's liveness
#: signal. The client deems an element alive while its stream grew within ``3 * BEAT``, and
#: asks the scheduler about it only when it did not.
BEAT = 5.0


def is_element_id(text: str) -> bool:
    """True for an array element id as corral makes them (``"4242_0"``, ``"L3_1"``): safe in
    a file name."""
    return bool(_ELEMENT.fullmatch(text))


class Mode(str, enum.Enum):
    """How the elements of a submission share its calls. The values are the plan file's
    words (a str enum, so that they compare equal to them too)."""

    STATIC = "static"  # element k runs calls tasks[k*chunk:(k+1)*chunk] (the caller's chunksize)
    PULL = "pull"  # every element claims any unclaimed call, each starting at its own offset


@dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    """What a batch asks of every one of its elements, whatever its submission."""

    strict: bool = False  # an element whose call failed exits 1 (jobs wait on it with afterok)
    stdin: bool = False  # the job script's input (a shell command) is every call's first argument
    requeue: Requeue | None = None  # the backend's; None: it sends no time-limit warning
    restart_env: str | None = None  # the backend's variable that says "this is a rerun"
    ranks: Ranks | None = None  # per_task: how each call runs on every task of the job

    def __post_init__(self) -> None:
        _bool(self.strict, "strict")
        _bool(self.stdin, "stdin")
        if self.requeue is not None and not isinstance(self.requeue, Requeue):
            raise ValueError(f"requeue must be a Requeue or None, not {self.requeue!r}")
        if self.ranks is not None and not isinstance(self.ranks, Ranks):
            raise ValueError(f"ranks must be a Ranks or None, not {self.ranks!r}")
        if self.restart_env is not None:
            _env_name(self.restart_env, "restart_env")


#: The most calls one plan may name (a planted plan must not make a worker build a list
#: that fills its memory): ten times the most a batch may hold.
_MAX_TASKS = 10_000_000


def _runs(tasks: tuple[tuple[int, int], ...]) -> list[list[int]]:
    """``tasks`` as runs of consecutive calls with one attempt: [first call, count, attempt]
    (a fresh batch's 100,000 calls are one run; its retries a few)."""
    runs: list[list[int]] = []
    for call, attempt in tasks:
        if runs:
            last = runs[-1]
            if last[2] == attempt and last[0] + last[1] == call:
                last[1] += 1
                continue
        runs.append([call, 1, attempt])
    return runs


@dataclass(frozen=True, kw_only=True)
class WorkerPlan:
    """What the elements of one submission read (``subs/<s>.json``); see the module doc."""

    mode: Mode
    tasks: tuple[tuple[int, int], ...]  # (call, attempt) pairs the submission may run (stored as runs)
    chunk: int = 0  # STATIC: calls per element
    first_element: int = 0  # PULL: this submission's first element among the batch's
    total_elements: int = 1  # PULL: elements of the batch in all its submissions
    strict: bool = False
    stdin: bool = False
    max_requeues: int = 0  # how often a call may be requeued from a checkpoint at a time limit
    requeue: Requeue | None = None
    restart_env: str | None = None
    ranks: Ranks | None = None  # written only when set: plans without it read as before

    def __post_init__(self) -> None:
        if not isinstance(self.mode, Mode):
            raise ValueError(f"mode must be one of {[m.value for m in Mode]}, not {self.mode!r}")
        _int(self.chunk, "chunk", 1 if self.mode is Mode.STATIC else 0)
        _int(self.first_element, "first_element")
        _int(self.total_elements, "total_elements", 1)
        _int(self.max_requeues, "max_requeues")
        self.options()  # validates them

    def options(self) -> WorkerOptions:
        """The batch's options this plan carries."""
        return WorkerOptions(
            strict=self.strict, stdin=self.stdin, requeue=self.requeue, restart_env=self.restart_env,
            ranks=self.ranks,
        )  # fmt: skip

    @classmethod
    def build(cls, options: WorkerOptions, **plan: Any) -> WorkerPlan:
        """A plan with the batch's ``options`` (``plan`` holds the other fields)."""
        return cls(
            strict=options.strict, stdin=options.stdin, requeue=options.requeue,
            restart_env=options.restart_env, ranks=options.ranks, **plan,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "tasks": _runs(self.tasks),
            "chunk": self.chunk,
            "first_element": self.first_element,
            "total_elements": self.total_elements,
            "strict": self.strict,
            "stdin": self.stdin,
            "max_requeues": self.max_requeues,
            "requeue": None if self.requeue is None else self.requeue.to_json(),
            "restart_env": self.restart_env,
        } | ({} if self.ranks is None else {"ranks": self.ranks.to_json()})

    @classmethod
    def from_json(cls, data: bytes, path: str) -> WorkerPlan:
        """The plan stored in ``data`` (the bytes of the file ``path``), checked field by
        field: :class:`FormatError` naming ``path`` for anything :meth:`to_json` does not write."""
        try:
            return cls._decode(json.loads(data))
        except (ValueError, TypeError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            raise FormatError(f"{path} is not a corral submission plan: {exc}", path=path) from None

    @classmethod
    def _decode(cls, record: object) -> WorkerPlan:
        if not isinstance(record, dict):
            raise ValueError(f"a JSON {type(record).__name__}, not an object")
        names = {f.name for f in fields(cls)} - ({"ranks"} - set(record))  # ranks: optional
        if set(record) != names:
            missing, extra = sorted(names - set(record)), sorted(set(record) - names)
            raise ValueError(f"its fields differ from a plan's (missing {missing}, unknown {extra})")
        runs = record["tasks"]
        if not isinstance(runs, list) or not all(
            isinstance(r, list) and len(r) == 3 and all(type(n) is int and n >= 0 for n in r) and r[1] > 0
            for r in runs
        ):
            raise ValueError("tasks must be a list of [first call, count >= 1, attempt] runs (whole numbers)")
        if sum(r[1] for r in runs) > _MAX_TASKS:
            raise ValueError(f"tasks hold more than {_MAX_TASKS} calls")
        requeue = record["requeue"]
        tasks = tuple((c, a) for first, n, a in runs for c in range(first, first + n))
        return cls(
            mode=Mode(record["mode"]), tasks=tasks, chunk=record["chunk"],
            first_element=record["first_element"], total_elements=record["total_elements"],
            strict=record["strict"], stdin=record["stdin"], max_requeues=record["max_requeues"],
            requeue=None if requeue is None else Requeue.from_json(requeue),
            restart_env=record["restart_env"],
            ranks=Ranks.from_json(record["ranks"]) if "ranks" in record else None,
        )  # fmt: skip


@dataclass(frozen=True)
class Claim:
    """Who took something: an array element (its id, host and pid), or the client
    (:attr:`CLIENT_CANCEL`: taken so that no element runs it). Part of a :class:`ChunkClaim`."""

    element: str
    host: str
    pid: int
    CLIENT_CANCEL: ClassVar[Claim]

    def __post_init__(self) -> None:
        if (self.element, self.host, self.pid) == ("", "", 0):
            return  # the client's cancel
        if not isinstance(self.element, str) or not is_element_id(self.element):
            raise ValueError(f"a claim's element id must be corral's, not {self.element!r}")
        if not isinstance(self.host, str) or not self.host.isprintable() or self.host.split() != [self.host]:
            raise ValueError(f"a claim's host must be one printable word, not {self.host!r}")
        if type(self.pid) is not int or not 0 < self.pid < _PID_LIMIT:
            raise ValueError(f"a claim's pid must be a process id, not {self.pid!r}")

    @property
    def by_client(self) -> bool:
        """True for the client's cancel."""
        return self == Claim.CLIENT_CANCEL

    def encode(self) -> bytes:
        """The claim file's bytes: ``b"<element> <host> <pid>"`` or ``b"client-cancel"``."""
        return _CANCEL_TEXT if self.by_client else f"{self.element} {self.host} {self.pid}".encode()

    @classmethod
    def parse(cls, data: bytes, path: str = "a claim") -> Claim:
        """The one reader of claim files: :class:`FormatError` naming ``path`` for anything
        :meth:`encode` does not write."""
        if data == _CANCEL_TEXT:
            return cls.CLIENT_CANCEL
        try:
            element, host, pid = data.decode("utf-8").split(" ")
            if not pid.isascii() or not pid.isdigit():
                raise ValueError(f"a claim's pid must be a process id, not {pid!r}")
            return cls(element, host, int(pid))
        except ValueError as exc:  # also a short or long split, and bad UTF-8
            raise FormatError(f"{path} is not a corral claim ({data[:80]!r}): {exc}", path=path) from None


Claim.CLIENT_CANCEL = Claim("", "", 0)


@dataclass(frozen=True)
class ChunkClaim:
    """The content of ``claims/<s>.<pos>``: ``who`` took positions ``pos..pos+n-1`` of
    submission s's task list (:attr:`WorkerPlan.tasks`, in order). The file is created
    exclusively and whole, so a reader never sees it empty or half written."""

    who: Claim
    n: int

    def __post_init__(self) -> None:
        if not isinstance(self.who, Claim):
            raise ValueError(f"a chunk claim's who must be a Claim, not {self.who!r}")
        _int(self.n, "a chunk claim's n", 1)

    def encode(self) -> bytes:
        """The claim file's bytes: the :class:`Claim`'s, a space, then ``n``."""
        return self.who.encode() + f" {self.n}".encode()

    @classmethod
    def parse(cls, data: bytes, path: str = "a chunk claim") -> ChunkClaim:
        """The one reader of chunk claim files: :class:`FormatError` naming ``path`` for
        anything :meth:`encode` does not write."""
        who, space, n = data.rpartition(b" ")
        if not space or not n.isascii() or not n.isdigit() or len(n) > 18:
            raise FormatError(f"{path} is not a corral chunk claim ({data[:80]!r})", path=path)
        try:
            return cls(Claim.parse(who, path), int(n))
        except ValueError as exc:
            raise FormatError(
                f"{path} is not a corral chunk claim ({data[:80]!r}): {exc}", path=path
            ) from None


def manifest_format(manifest: Mapping[str, Any]) -> int:
    """The format version a manifest says it has: 1 when it says none (older corrals)."""
    found = manifest.get("format", 1)
    if type(found) is not int or found < 1:
        raise ValueError(f"its format is {found!r}, not a version number")
    return found


def check_format(manifest: object, path: str) -> None:
    """Refuse a batch (its folder ``path``, its manifest read as JSON) written in another
    format than :data:`FORMAT_VERSION`, before anything else of it is read:
    :class:`FormatVersionError` saying which, and what to do; :class:`FormatError` for a
    manifest that is not one."""
    if not isinstance(manifest, Mapping):
        raise FormatError(f"{path}/manifest.json is not a corral manifest: not a JSON object", path=path)
    try:
        found = manifest_format(manifest)
    except ValueError as exc:
        raise FormatError(f"{path}/manifest.json is not a corral manifest: {exc}", path=path) from None
    if found == FORMAT_VERSION:
        return
    by = "by an older corral" if found < FORMAT_VERSION else "by a newer corral"
    raise FormatVersionError(
        f"{path} was written in corral's work-dir format {found} ({by}); this corral reads format "
        f"{FORMAT_VERSION}. Watch it with the corral that wrote it, or remove it (nothing of it is read)",
        path=path,
        found=found,
    )
