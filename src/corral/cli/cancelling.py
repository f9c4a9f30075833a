"""``corral cancel BATCH [BATCH...] | --all``: stop batches from another shell.

For each batch, from its folder (:func:`corral.store.records.open_calls`): the calls whose
latest attempt has not ended, and the jobs of the submissions that may still run them. Then,
in this order:

1. every such attempt is marked cancelled (``cancels/<call>.<attempt>``, the mark
   ``future.cancel()`` writes): an element that takes one later skips it, so a job that
   starts before the scheduler hears of the cancel runs nothing, and a client still watching
   the batch sees those calls cancelled;
2. the batch's jobs are cancelled through the batch's own backend (the manifest names it), in
   one scheduler command for the batch (``scancel`` with all its job ids). The local backend's
   elements are processes of this host: those still running are signalled by their pid, which
   their stream records (the process is checked to be the one that started, not a reused pid);
3. each attempt that had started is recorded as ended ``CANCELLED`` (``attempts/``), as a
   client watching the batch records a job the scheduler reports cancelled.

So ``corral status`` shows those calls as cancelled, not running or lost, and
:func:`corral.attach` (or a client still watching) fails started ones with
:class:`~corral.errors.JobCancelledError` and never resubmits them. Other batches' jobs are
not touched. ``--all`` cancels every batch of the work dir that has calls not ended.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any

from ..backends import get_backend
from ..errors import CorralError
from ..job import Attempt
from ..store import records
from ..store.batch import BatchStore
from ..transports.local import LocalTransport
from ..trust import check_batch_dir
from . import codes
from .display import printable
from .looking import one, say

#: The reason recorded for an attempt this command cancelled.
REASON = "cancelled by corral cancel"


@dataclass(frozen=True)
class Cancelled:
    """What :func:`cancel_batch` did to one batch."""

    name: str
    backend: str
    job_ids: list[str]  # given to the scheduler, in one command
    pending: int  # calls no job had taken: they will not run
    started: int  # calls whose job was cancelled while they ran (or that were lost)


def add_command(commands: Any, shared: argparse.ArgumentParser) -> None:
    """Add ``corral cancel`` to the command's subparsers."""
    cancel = commands.add_parser(
        "cancel", parents=[shared], help="cancel batches' jobs (corral cancel BATCH... | --all)",
        description="Cancel the calls of these batches that have not ended, and their jobs, through "
        "each batch's own backend (one scheduler command per batch). Other batches are not touched.",
    )  # fmt: skip
    cancel.add_argument("batches", nargs="*", metavar="BATCH", help="a batch name, unique prefix, or path")
    cancel.add_argument("--all", action="store_true", help="every batch of the work dir with calls not ended")
    cancel.set_defaults(command=cancel_command)


def cancel_command(args: argparse.Namespace) -> int:
    """``corral cancel``: print what was cancelled; exit 5 when nothing was."""
    if bool(args.batches) == bool(args.all):
        print("corral cancel: error: name the batches to cancel, or give --all", file=sys.stderr)
        return codes.USAGE
    if args.all:
        root = records.work_root(args.dir)
        paths = records.list_batches(root)
    else:
        paths = [records.find_batch(ref, args.dir) for ref in args.batches]  # all found before any acts
    done = 0
    for path in paths:
        try:
            found = cancel_batch(path)
        except CorralError as exc:
            if not args.all:
                raise
            print(f"corral: {printable(str(exc))}", file=sys.stderr)  # one broken folder stops no other
            continue
        if found is None:
            if not args.all:
                say(f"{one(os.path.basename(path))}: nothing to cancel, every call has ended")
            continue
        done += 1
        jobs = f"jobs {', '.join(found.job_ids)}" if found.job_ids else "no job"
        say(
            f"cancelled {one(found.name)}: {found.pending} pending and {found.started} started calls; "
            f"{one(jobs)} cancelled through {one(found.backend)}"
        )
    if not done:
        if args.all:
            say(f"nothing to cancel in {one(records.work_root(args.dir))}")
        return codes.NOTHING
    return codes.OK


def cancel_batch(path: str) -> Cancelled | None:
    """Cancel the batch in ``path`` (see the module docstring); None when every call of it
    has ended. The batch folder and its root must be the user's alone."""
    check_batch_dir(path)
    found = records.open_calls(path)
    if not found:
        return None
    store = BatchStore(found.path, LocalTransport())
    for call, attempt in (*found.pending, *found.started):
        store.mark_cancel(call, attempt)
    _cancel_jobs(found)
    for call, attempt in found.started:
        element, host = found.elements[(call, attempt)]
        record = Attempt(attempt, element or None, "CANCELLED", host, REASON)
        store.record_attempt(call, attempt, record.to_json())
    return Cancelled(found.name, found.backend, found.job_ids, len(found.pending), len(found.started))


def _cancel_jobs(found: records.OpenCalls) -> None:
    """One command to the batch's scheduler for all its jobs that may still run."""
    if not found.backend:
        raise CorralError(f"{found.path}: the manifest does not say which backend ran it")
    if found.backend == "sequential" or not (found.job_ids or found.here):
        return  # nothing runs outside this process: the marks are all there is to do
    backend = get_backend(found.backend)
    try:
        if not backend.detached:
            # The local backend's elements belong to the client that started them: those
            # that run here are cancelled by their pid, as corral.attach adopts them.
            backend.adopt_elements(found.here)
        backend.cancel(found.job_ids)
    finally:
        backend.close()
