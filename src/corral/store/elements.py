"""The per-element files of a batch (format 2): chunk claims, the client's cancel and stop
marks, the elements' streams and output files, and the files of large results. The layout is
drawn in :mod:`corral.store.batch`; :class:`ElementFiles` is the part of
:class:`~corral.store.batch.BatchStore` that knows these names.

Every file here is created exclusively (claims, cancels, stops) or appended to by the one
element that owns it (streams, output), never rewritten; nothing is ever deleted by a job.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..errors import UnsafeWorkDirError
from ..transports.base import Scan, Transport
from .outcomes import Outcome, decode_outcome_file, encode_outcome
from .protocol import ChunkClaim, is_element_id

#: The folders of format 2 beside those of every format (see BatchStore.create).
ELEMENT_FOLDERS = ("claims", "cancels", "stops", "streams", "results")


def _task_name(call: int, attempt: int) -> str:
    return f"{call}.{attempt}"


def _pairs(names: list[str]) -> set[tuple[int, int]]:
    """``["3.0", ".x.tmp", "a.b"]`` -> ``{(3, 0)}``: the names that are two whole numbers."""
    found = set()
    for name in names:
        first, dot, second = name.partition(".")
        if dot and first.isdigit() and second.isdigit() and first.isascii() and second.isascii():
            found.add((int(first), int(second)))
    return found


class ElementFiles:
    """The per-element operations of a batch folder (mixed into BatchStore, which sets
    ``path`` and ``transport``)."""

    path: str
    transport: Transport

    def _p(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    # -- chunk claims: claims/<sub>.<pos> ----------------------------------------------------

    def chunk_claim_path(self, sub: int, pos: int) -> str:
        """Where the claim of position ``pos`` of submission ``sub``'s task list is."""
        return self._p("claims", f"{sub}.{pos}")

    def claim_chunk(self, sub: int, pos: int, claim: ChunkClaim) -> bool:
        """Take positions ``pos..pos+claim.n-1`` of submission ``sub``'s tasks for
        ``claim.who``; False when the name is taken (by an element, or the client's cancel)."""
        return self.transport.create_exclusive(self.chunk_claim_path(sub, pos), claim.encode())

    def read_chunk_claim(self, sub: int, pos: int) -> ChunkClaim | None:
        """The claim at ``pos``; None when there is none. Never waits: a claim is created
        whole. :class:`~corral.errors.FormatError` for a file that is not a claim."""
        path = self.chunk_claim_path(sub, pos)
        try:
            data = self.transport.read_bytes(path)
        except FileNotFoundError:
            return None
        return ChunkClaim.parse(data, path)

    def chunk_claims(self, sub: int) -> dict[int, ChunkClaim]:
        """Every claim of submission ``sub``, by position (one listing, then one read per
        claim of that submission). :class:`~corral.errors.FormatError` for one that is not."""
        positions = [pos for s, pos in _pairs(self.transport.listdir(self._p("claims"))) if s == sub]
        found = {}
        for pos in sorted(positions):
            claim = self.read_chunk_claim(sub, pos)
            if claim is not None:
                found[pos] = claim
        return found

    # -- the client's marks: cancels/<c>.<a>, stops/<c>.<a> -----------------------------------

    def mark_cancel(self, call: int, attempt: int) -> bool:
        """Mark an attempt cancelled, so that an element that takes it writes a Skip for it
        instead of running it; False when it was marked already."""
        return self.transport.create_exclusive(self._p("cancels", _task_name(call, attempt)), b"")

    def cancel_marks(self) -> set[tuple[int, int]]:
        """The (call, attempt) pairs marked cancelled (one listing)."""
        return _pairs(self.transport.listdir(self._p("cancels")))

    def stop_path(self, call: int, attempt: int) -> str:
        """Where the client's stop request of a running attempt is."""
        return self._p("stops", _task_name(call, attempt))

    def request_stop(self, call: int, attempt: int) -> None:
        """Ask the running attempt to stop (``corral.Stopped`` at its next ``progress()``);
        asking twice is harmless."""
        self.transport.create_exclusive(self.stop_path(call, attempt), b"")

    def stop_requested(self, call: int, attempt: int) -> bool:
        """True once :meth:`request_stop` was called for the attempt."""
        try:
            self.transport.read_bytes(self.stop_path(call, attempt))
        except FileNotFoundError:
            return False
        return True

    # -- streams and output: streams/<element>.log|out|err ------------------------------------

    def streams_folder(self) -> str:
        """The folder of the elements' streams (what :meth:`Transport.scan` is given)."""
        return self._p("streams")

    def scan_streams(self, cursors: Mapping[str, int], *, output: bool = False) -> dict[str, bytes]:
        """What every element appended to its stream since ``cursors`` (by file name,
        ``"<element>.log"``), in one transport operation: see
        :meth:`corral.transports.base.Transport.scan`. ``output``: and to its ``.out`` and
        ``.err`` files, read before the streams."""
        folder, cursors, also = self.stream_scan(cursors, output=output)
        return self.transport.scan(folder, cursors, also) if also else self.transport.scan(folder, cursors)

    def stream_scan(self, cursors: Mapping[str, int], *, output: bool = False) -> Scan:
        """What :meth:`scan_streams` asks the transport, for a scan of several batches at once
        (:meth:`corral.transports.base.Transport.scan_many`)."""
        return self.streams_folder(), cursors, (".out", ".err") if output else ()

    def stream_path(self, element: str) -> str:
        """Where element ``element``'s records are (see :mod:`corral.store.streams`)."""
        return self._p("streams", f"{_element(element)}.log")

    def output_path(self, element: str, stream: str) -> str:
        """Where element ``element``'s calls' stdout (``"out"``) or stderr (``"err"``) is."""
        if stream not in ("out", "err"):
            raise ValueError(f"stream must be 'out' or 'err', not {stream!r}")
        return self._p("streams", f"{_element(element)}.{stream}")

    def read_stream(self, element: str) -> bytes:
        """The whole of an element's stream (checked as a file to unpickle); ``b""`` when it
        has none yet."""
        try:
            return self.transport.read_private(self.stream_path(element))
        except FileNotFoundError:
            return b""

    def read_output_range(self, element: str, stream: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` of an element's out or err file, as they are (fewer if"""
        try:
            return self.transport.read_range(self.output_path(element, stream), start, end - start)
        except FileNotFoundError:
            return b""
        except UnsafeWorkDirError:
            raise
        except OSError:  # not that long yet (a slow shared file system): the next scan reads it
            return b""

    def read_output(self, element: str, stream: str, start: int, end: int | None) -> str:
        """Bytes ``start`` to ``end`` (None: to the end) of an element's out or err file,
        decoded with ``errors="replace"``; ``""`` when the file does not exist."""
        path = self.output_path(element, stream)
        try:
            if end is not None and end > start:
                return self.transport.read_range(path, start, end - start).decode(errors="replace")
            data = self.transport.read_bytes(path)
        except FileNotFoundError:
            return ""
        except OSError:  # shorter than the range: what there is of it
            data = self.transport.read_bytes(path)
            return data[start:end].decode(errors="replace")
        return data[start:end].decode(errors="replace")

    # -- large results: results/<c>.<a>.pkl ----------------------------------------------------

    def result_path(self, call: int, attempt: int) -> str:
        return self._p("results", f"{_task_name(call, attempt)}.pkl")

    def write_outcome(self, call: int, attempt: int, outcome: Outcome, *, durable: bool = False) -> None:
        """Write an attempt's outcome file (``durable``: synced before it takes its name, as
        the worker does before the Result record that points to it)."""
        self.transport.write_bytes(self.result_path(call, attempt), encode_outcome(outcome), durable=durable)

    def read_outcome(self, call: int, attempt: int) -> Outcome:
        """An attempt's outcome file. Nothing is unpickled here: the value or exception stays
        bytes in ``payload``. ``ValueError`` when the file is not one corral writes."""
        return decode_outcome_file(self.transport.read_private(self.result_path(call, attempt)))

    def read_large_result(self, call: int, attempt: int) -> Outcome:
        """The outcome a Result record with ``in_file`` points to (see :meth:`read_outcome`)."""
        return self.read_outcome(call, attempt)


def _element(element: str) -> str:
    """``element`` when it is an element id corral makes: a planted one cannot name a file
    outside the streams folder."""
    if not is_element_id(element):
        raise ValueError(f"not a corral element id: {element!r}")
    return element
