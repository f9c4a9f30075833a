"""``corral status --watch [BATCH]``: the progress bar of ``map`` (see
:mod:`corral.frontends.progress_bar`), drawn from another shell from the work dir alone.

Each look reads the batch folder as ``corral status`` does (no scheduler is asked, nothing
is unpickled): a call that started and has no outcome yet is running, as far as the folder
says. Without BATCH, every batch of the work dir with calls not ended gets a bar. On a
terminal the bars are redrawn in place; otherwise a batch's line is printed each time it
changes. The command returns once every call watched has ended; Ctrl-C stops it (exit 130).
"""

from __future__ import annotations

import os
import sys
import time

from ..engine.ledger_values import Counts
from ..engine.tally import ended
from ..frontends.progress_bar import ProgressBar, summary
from ..store import records
from ..store.reading import CallStatus, latest_status, open_batch, scan_batch
from .display import printable

#: Which count each status adds to: pending, running, done, failed, cancelled.
_SLOT = {
    CallStatus.PENDING: 0, CallStatus.RUNNING: 1, CallStatus.COMPLETED: 2, CallStatus.FAILED: 3,
    CallStatus.LOST: 3, CallStatus.CANCELLED: 4,
}  # fmt: skip

#: The exit code when the watch was interrupted (as a shell reports SIGINT).
INTERRUPTED = 130


def tally(path: str) -> Counts:
    """How the calls of the batch in ``path`` stand, as its folder says; ``retried`` counts
    the attempts after each call's first."""
    store, _, calls = open_batch(path)
    folder = scan_batch(store, calls)
    slots = [0, 0, 0, 0, 0]
    for call in range(calls):
        slots[_SLOT[latest_status(store, folder, call)[0]]] += 1
    pending, running, done, failed, cancelled = slots
    return Counts(pending, running, done, failed, cancelled, sum(folder.latest))


class Watched:
    """One batch watched: its counts at the last look, and its bar on a terminal."""

    def __init__(self, path: str, line: int, drawn: bool) -> None:
        self.path = path
        self.name = printable(os.path.basename(path))
        self.counts = tally(path)
        self.total = ended(self.counts) + self.counts.pending + self.counts.running
        self.bar = ProgressBar(self.name, self.total, self.look, True, line=line) if drawn else None

    def look(self) -> Counts:
        self.counts = tally(self.path)
        return self.counts

    @property
    def line(self) -> str:
        return f"{self.name}: {summary(self.counts, self.total)}"

    @property
    def over(self) -> bool:
        return _over(self.counts)


def _over(counts: Counts) -> bool:
    return counts.pending + counts.running == 0


def watch(batch: str | None, directory: str | None, every: float) -> int:
    """Show the batches, one look each ``every`` seconds, until every watched call ended."""
    if batch is not None:
        paths = [records.find_batch(batch, directory)]
    else:
        paths = records.list_batches(records.work_root(directory))
        paths = [p for p in paths if not _over(tally(p))]
        if not paths:
            print("every call of every batch has ended: nothing to watch")
            return 0
    drawn = sys.stderr.isatty()
    watched = [Watched(path, line, drawn) for line, path in enumerate(paths)]
    shown = {w.path: "" for w in watched}
    try:
        while True:
            for w in watched:
                if w.bar is not None:
                    w.bar.refresh(now=True)
                else:
                    w.look()
                    if w.line != shown[w.path]:
                        shown[w.path] = w.line
                        print(w.line, flush=True)
            if all(w.over for w in watched):
                break
            time.sleep(every)
    except KeyboardInterrupt:
        return INTERRUPTED
    finally:
        for w in watched:
            if w.bar is not None:
                w.bar.close()
    return 0
