"""The work dir: the only code that knows corral's file names.

Layout (every folder 0700, every file written atomically: temporary file, then rename)::

    <root>/                       default ./.corral, or $CORRAL_DIR, or directory=...
      <batch>/                    one folder per batch, e.g. square-20261121-140312-<24 hex digits>,
                                  created exclusively (never reused); the root and each batch
                                  folder must be the user's alone (see corral.trust)
        manifest.json             what the batch is: work-dir format version (see corral.store.protocol),
                                  function name, call count, backend, creation time
        engine.pkl                the engine's settings for it (retry policy, worker options), so
                                  that corral.attach can watch it from another process
        function.pkl              the function, stored once (cloudpickle), with the client's sys.path
        calls.bin  calls.idx      one small payload per call, (args, kwargs), packed into one
                                  file with an index of offsets: one file to create, not N
        blobs.bin  blobs.json     only when calls hold big values (a numpy array or bytes of
                                  1 MB or more): each such value pickled once, whatever the
                                  number of calls holding it, and its offset and length by
                                  the hash of its pickle (see corral.store.pickling.Blobs)
        subs/<s>.json             submission s: which calls its array elements may take, and how
                                  (a corral.store.protocol.WorkerPlan)
        subs/<s>.sh               the exact job script submitted
        subs/<s>.pkl              submission s as the engine knows it (plan and spec), for attach
        subs/<s>.job              the scheduler's job id for submission s
        claims/<s>.<pos>          a chunk claim: who took positions pos..pos+n-1 of submission
                                  s's task list, and n (a corral.store.protocol.ChunkClaim);
                                  created exclusively and whole (written, then linked)
        cancels/<i>.<a>           the client cancelled attempt a of call i (empty, exclusive): an
                                  element that takes it writes a Skip record instead of running it
        stops/<i>.<a>             the client asks the running attempt to stop (empty): the call
                                  gets corral.Stopped at its next progress()
        streams/<element>.log     element <job>_<k>'s records, framed (corral.store.streams):
                                  Start, Claim, Progress, Result, Skip, Beat, End. A call's
                                  outcome is a Result record, its value pickled inside
        streams/<element>.out|err what the element's calls printed (fds 1 and 2); a call's own
                                  output is the range between the offsets of the record before
                                  its Result and of its Result
        results/<i>.<a>.pkl       only a result above RESULT_INLINE_MAX: the outcome file (a data
                                  record, one JSON line, then the pickled value or exception),
                                  written and synced before the Result that points to it.
                                  Readers for people read the record alone and never unpickle
        logs/job-<job>_<k>.out|err   array element k's stdout and stderr as the scheduler wrote
                                  them: what the worker printed outside calls
        attempts/<i>.<a>.json     how attempt a of call i ended without a result (job, state, node),
                                  written by the client when it resubmits or fails the call
        checkpoints/<i>.pkl       what to run in place of call i when it runs again: written by
                                  the worker when a Checkpointable call is interrupted

Nothing here is deleted by a job: a requeued job must be able to start again.
"""

from __future__ import annotations

import array
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from ..errors import FormatError
from ..transports.base import Transport
from .elements import ELEMENT_FOLDERS, ElementFiles
from .outcomes import OUTCOME_MAGIC, Outcome, decode_outcome_file, encode_outcome
from .protocol import FORMAT_VERSION, WorkerPlan, check_format

MANIFEST = "manifest.json"  # written last: a folder with one is a batch


def default_root() -> str:
    """The work dir root: ``$CORRAL_DIR`` or ``./.corral``, as an absolute path."""
    return os.path.abspath(os.environ.get("CORRAL_DIR") or ".corral")


#: How many names BatchStore.create tries before it gives up.
_NAME_TRIES = 100


def _unique_suffix() -> str:
    """The part of a batch folder's name after the function's: the time to the second, for
    people, and 96 random bits, so that no two batches ever pick the same name."""
    import secrets  # here, not at the top: the worker never creates batches

    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(12)}"


def task_name(call: int, attempt: int) -> str:
    return f"{call}.{attempt}"


def parse_task_name(name: str) -> tuple[int, int] | None:
    """``"12.0"`` or ``"12.0.pkl"`` -> (12, 0); anything else (temporary files) -> None."""
    parts = name.split(".")
    if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    if len(parts) > 3 or (len(parts) == 3 and parts[2] != "pkl"):
        return None
    return int(parts[0]), int(parts[1])


class BatchStore(ElementFiles):
    """One batch folder, reached through a transport (local, or a remote host's); its
    per-element files are :class:`~corral.store.elements.ElementFiles`'."""

    def __init__(self, path: str, transport: Transport) -> None:
        self.path = path
        self.name = os.path.basename(path)
        self.transport = transport
        self._offsets: array.array[int] | None = None
        self._blobs: dict[str, Any] | None = None  # blobs.json, once read

    # -- creating -----------------------------------------------------------------------------

    @classmethod
    def create(cls, root: str, hint: str, transport: Transport) -> BatchStore:
        """A new batch folder in ``root``, created exclusively: a name that exists already
        (another batch's, or one planted there) is never reused. ``root`` is created if need
        be, and must be the user's alone (see :mod:`corral.trust`)."""
        safe = "".join(c if c.isalnum() or c in "_-" else "_" for c in hint)[:40] or "batch"
        transport.makedirs(root)
        for _ in range(_NAME_TRIES):
            path = os.path.join(root, f"{safe}-{_unique_suffix()}")
            if transport.mkdir_exclusive(path):
                break
        else:  # 96 random bits collide this often only when the random source is broken
            from ..errors import WorkDirError

            raise WorkDirError(f"no free batch folder name in {root} after {_NAME_TRIES} tries", path=root)
        # In a folder just made, ours alone: no one else can have put anything there.
        transport.makedirs_many(
            [os.path.join(path, sub) for sub in ("subs", "logs", "attempts", "checkpoints", *ELEMENT_FOLDERS)]
        )
        return cls(path, transport)

    def sweep_temporaries(self) -> int:
        """Remove the temporary files that writers killed mid-write left in this batch's
        folders (see :meth:`corral.transports.base.Transport.sweep_temporaries`)."""
        folders = ("", "subs", "results", "attempts", "checkpoints", "claims", "cancels", "stops")
        return self.transport.sweep_temporaries([self._p(f) if f else self.path for f in folders])

    def write_batch(
        self, manifest: dict[str, Any], function: bytes, calls: list[bytes], blobs: Mapping[str, bytes] = {}
    ) -> None:
        """Store the batch's function and calls, and the big values they refer to, then its
        manifest (last: a folder counts as a batch once it has one), stamped with the format
        version this corral writes."""
        offsets = array.array("Q", [0])
        for data in calls:
            offsets.append(offsets[-1] + len(data))
        if sys.byteorder != "little":
            offsets.byteswap()
        files = [
            (self._p("function.pkl"), function),
            (self._p("calls.bin"), b"".join(calls)),
            (self.calls_index_path(), offsets.tobytes()),
        ]
        if blobs:
            index, at = {}, 0
            for key, data in blobs.items():
                index[key] = [at, len(data)]
                at += len(data)
            files.append((self._p("blobs.bin"), b"".join(blobs.values())))
            files.append((self._p("blobs.json"), json.dumps(index).encode()))
        manifest_text = json.dumps({**manifest, "format": FORMAT_VERSION}, indent=1).encode()
        self.transport.write_many([*files, (self._p(MANIFEST), manifest_text)])

    def write_submission(self, sub: int, plan: WorkerPlan, script: str, engine: bytes = b"") -> str:
        """Store submission ``sub``'s plan and script, and what the engine needs to watch it
        again from another process (``engine``, pickled); return the script's path."""
        script_path = self.script_path(sub)
        files = [
            (self._p("subs", f"{sub}.json"), json.dumps(plan.to_json()).encode()),
            (script_path, script.encode()),
        ]
        if engine:
            files.append((self._p("subs", f"{sub}.pkl"), engine))
        self.transport.write_many(files)
        return script_path

    def script_path(self, sub: int) -> str:
        """Where submission ``sub``'s job script is."""
        return self._p("subs", f"{sub}.sh")

    def read_submission_engine(self, sub: int) -> bytes:
        """What :meth:`write_submission` kept for the engine."""
        return self.transport.read_private(self._p("subs", f"{sub}.pkl"))

    def write_engine(self, data: bytes) -> None:
        """The batch's own settings for the engine (retry policy, worker options), pickled."""
        self.transport.write_bytes(self._p("engine.pkl"), data)

    def read_engine(self) -> bytes:
        return self.transport.read_private(self._p("engine.pkl"))

    def record_job_id(self, sub: int, job_id: str) -> None:
        self.transport.write_bytes(self._p("subs", f"{sub}.job"), job_id.encode())

    # -- reading, for the worker --------------------------------------------------------------

    def read_function(self) -> bytes:
        return self.transport.read_private(self._p("function.pkl"))

    def read_call(self, call: int) -> bytes:
        """Call ``call``'s payload alone, by its offsets in the packed file."""
        offsets = self._call_offsets()
        start, end = offsets[call], offsets[call + 1]
        return self.transport.read_range(self._p("calls.bin"), start, end - start)

    def remove(self) -> None:
        """Remove the batch folder and all it holds (see corral.frontends.retention)."""
        self.transport.remove_tree(self.path)

    def read_blob(self, key: str) -> bytes:
        """The pickle of the big value ``key`` that calls refer to (checked as a file to
        unpickle); FormatError when the batch holds no such value."""
        path = self._p("blobs.json")
        if self._blobs is None:
            index = json.loads(self.transport.read_private(path))
            if not isinstance(index, dict):
                raise FormatError(f"{path}: not an index of values", path=path)
            self._blobs = index
        where = self._blobs.get(key)
        if not isinstance(where, list) or len(where) != 2 or not all(_offset(n) for n in where):
            raise FormatError(f"{path}: no value {key!r}", path=path)
        return self.transport.read_range(self._p("blobs.bin"), where[0], where[1])

    def read_calls(self, calls: list[int]) -> dict[int, bytes]:
        """The payloads of ``calls`` (a chunk's), in one read of the span they lie in when
        it is not much more than they are, else one read each."""
        if not calls:
            return {}
        offsets = self._call_offsets()
        low, high = min(calls), max(calls)
        start, end = offsets[low], offsets[high + 1]
        if high - low >= 4 * len(calls):
            return {call: self.read_call(call) for call in calls}
        span = self.transport.read_range(self._p("calls.bin"), start, end - start)
        return {call: span[offsets[call] - start : offsets[call + 1] - start] for call in calls}

    def _call_offsets(self) -> array.array[int]:
        if self._offsets is None:
            offsets = array.array("Q", self.transport.read_bytes(self.calls_index_path()))
            if sys.byteorder != "little":
                offsets.byteswap()
            self._offsets = offsets
        return self._offsets

    def read_plan(self, sub: int) -> WorkerPlan:
        """Submission ``sub``'s plan; :class:`~corral.errors.FormatError` naming the file
        for one this corral did not write."""
        path = self._p("subs", f"{sub}.json")
        return WorkerPlan.from_json(self.transport.read_bytes(path), path)

    # -- outcomes, attempts, checkpoints, logs ----------------------------------------------------

    def read_outcome_record(self, call: int, attempt: int) -> Outcome:
        """The outcome's data record alone (``payload`` is empty): what a reader for people
        may show. ``ValueError`` when the file is not an outcome corral wrote."""
        return replace(self.read_outcome(call, attempt), payload=b"")

    def record_attempt(self, call: int, attempt: int, record: dict[str, Any]) -> None:
        """Keep how an attempt ended (see :class:`corral.job.Attempt`)."""
        path = self._p("attempts", f"{task_name(call, attempt)}.json")
        self.transport.write_bytes(path, json.dumps(record).encode())

    def attempts(self) -> dict[tuple[int, int], dict[str, Any]]:
        """Every recorded attempt, by (call, attempt)."""
        return {task: self.read_attempt(*task) for task in self.recorded()}

    def write_checkpoint(self, call: int, data: bytes, requeues: int) -> None:
        """Keep what call ``call`` runs next (a pickled :class:`corral.worker.checkpoint.Resume`) and
        how many times it was requeued from a checkpoint at a time limit: a JSON line, then
        the pickle, so that the client can read the count without unpickling anything."""
        record = json.dumps({"requeues": requeues}).encode() + b"\n" + data
        self.transport.makedirs(self._p("checkpoints"))
        self.transport.write_bytes(self._p("checkpoints", f"{call}.pkl"), record)

    def read_checkpoint(self, call: int) -> tuple[bytes, int] | None:
        """(pickled Resume, requeues) of call ``call``, or None when it has no checkpoint.
        Nothing is unpickled here."""
        try:
            data = self.transport.read_private(self._p("checkpoints", f"{call}.pkl"))
        except FileNotFoundError:
            return None
        line, newline, resume = data.partition(b"\n")
        requeues = json.loads(line).get("requeues") if newline and line.startswith(b"{") else None
        if not isinstance(requeues, int):
            raise ValueError(f"checkpoint of call {call} in {self.path} is not one corral wrote")
        return resume, requeues

    def element_log(self, element: str, stream: str) -> str:
        """Path of an array element's stream as the scheduler writes it."""
        return self._p("logs", f"job-{element}.{stream}")

    def element_log_pattern(self, stream: str, job_token: str, index_token: str) -> str:
        """The element log path with the scheduler's placeholders (e.g. ``%A``, ``%a``)."""
        return self._p("logs", f"job-{job_token}_{index_token}.{stream}")

    def read_text(self, path: str) -> str:
        try:
            return self.transport.read_bytes(path).decode(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, path: str, lines: int = 20) -> str:
        return "\n".join(self.read_text(path).rstrip("\n").splitlines()[-lines:])

    # -- reading, for the command line (corral.records) ----------------------------------------

    @staticmethod
    def is_batch(path: str) -> bool:
        """True when the folder ``path`` holds a batch: its manifest, written last, is there."""
        return os.path.isfile(os.path.join(path, MANIFEST))

    def calls_index_path(self) -> str:
        """Where the calls' index is: one 8-byte offset more than there are calls."""
        return self._p("calls.idx")

    def read_manifest(self) -> dict[str, Any]:
        """The batch's manifest, whatever its format (``FileNotFoundError`` when it has none
        yet); see :meth:`check_format` before reading anything else."""
        manifest: dict[str, Any] = json.loads(self.transport.read_bytes(self._p(MANIFEST)))
        return manifest

    def check_format(self) -> dict[str, Any]:
        """The manifest of a batch written in this corral's format:
        :class:`~corral.errors.FormatVersionError` for another version,
        :class:`~corral.errors.FormatError` for a manifest that is not one. Every reader calls
        this before it reads anything else of the batch."""
        try:
            manifest = self.read_manifest()
        except ValueError as exc:  # not JSON, or not UTF-8
            raise FormatError(
                f"{self.path}/manifest.json is not a corral manifest: {exc}", path=self.path
            ) from None
        check_format(manifest, self.path)
        return manifest

    def submissions(self) -> list[int]:
        """The numbers of the submissions whose plan was written, in order."""
        return sorted(_numbered(self.transport.listdir(self._p("subs")), "json"))

    def job_ids(self) -> dict[int, str]:
        """The scheduler's job id of each submission that got one, by submission number."""
        subs = sorted(_numbered(self.transport.listdir(self._p("subs")), "job"))
        return {s: self.transport.read_bytes(self._p("subs", f"{s}.job")).decode().strip() for s in subs}

    def recorded(self) -> set[tuple[int, int]]:
        """The (call, attempt) pairs with a record in ``attempts/``, without reading them."""
        names = self.transport.listdir(self._p("attempts"))
        return _task_names(n.removesuffix(".json") for n in names if n.endswith(".json"))

    def read_attempt(self, call: int, attempt: int) -> dict[str, Any]:
        """The record of one attempt (see :meth:`record_attempt`)."""
        path = self._p("attempts", f"{task_name(call, attempt)}.json")
        record: dict[str, Any] = json.loads(self.transport.read_bytes(path))
        return record


def _task_names(names: Iterable[str]) -> set[tuple[int, int]]:
    return {t for t in map(parse_task_name, names) if t is not None}


def _numbered(names: Iterable[str], suffix: str) -> list[int]:
    """``["0.json", "1.sh", ".2.json.tmp"]``, ``"json"`` -> ``[0]``: temporary files are skipped."""
    found = []
    for name in names:
        stem, dot, ext = name.partition(".")
        if dot and ext == suffix and stem.isdigit():
            found.append(int(stem))
    return found


__all__ = [
    "OUTCOME_MAGIC",
    "BatchStore",
    "Outcome",
    "decode_outcome_file",
    "default_root",
    "encode_outcome",
    "parse_task_name",
    "task_name",
]


def _offset(value: object) -> bool:
    return type(value) is int and value >= 0
