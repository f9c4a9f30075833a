"""What is kept of a batch once its results are in: ``keep=`` of the Executor and the Pool.

======== =========================================================================
keep     a batch folder, once every call of it ended and the results were read
======== =========================================================================
"all"    stays (the Executor's default: ``future.stdout()``, ``corral logs`` later)
"failed" stays only if a call of it failed or was cancelled (the Pool's default: as
         with ``multiprocessing``, nothing is left behind when all went well)
"none"   is removed
======== =========================================================================

``keep`` is a configuration key too (config files, ``set_defaults``, ``CORRAL_KEEP``): set, it
is every front-end's default.

"Read" means: the Executor's ``shutdown(wait=True)`` (the end of its ``with`` block), the
Pool's ``join()`` after ``close()``, or its ``terminate()`` (the end of its ``with`` block).
A batch not ended by then stays; so do the batches of ``@task`` (its client does not wait)
and of sweeps (resuming one reads them again). A batch to remove is first let go by the
engine: what is left of its jobs (elements that found no more calls and are exiting) is
cancelled, so that no job writes into a folder that is gone. ``corral clean`` removes
old batches from the command line.
"""

from __future__ import annotations

import logging
import threading

from ..engine.cluster import Cluster
from ..engine.ledger import Ledger
from ..engine.tracking import BatchState
from ..store.batch import BatchStore

log = logging.getLogger(__name__)


class Retention:
    """The batches of one Executor or Pool, as ``keep`` needs them: their folders and their
    ledgers (the calls' outcomes, not their values), held until the results are in. The
    front-end's own list of batches is weak, and a batch that ended is let go by the engine."""

    def __init__(self, keep: str) -> None:
        self.keep = keep
        self._held: list[tuple[BatchStore, Ledger]] = []
        self._lock = threading.Lock()

    def add(self, batch: BatchState) -> None:
        """A new batch of the front-end (nothing is held when everything is kept)."""
        if self.keep != "all":
            with self._lock:
                self._held.append((batch.store, batch.ledger))

    def retire(self, cluster: Cluster) -> list[str]:
        """Remove the folders that ``keep`` lets go: of batches that ended, and (for
        "failed") whose every call returned a value. Their paths; a folder that cannot be
        removed is logged and left, and a batch not ended is held for the next time."""
        with self._lock:
            held, self._held = self._held, []
        gone = [(s, ledger) for s, ledger in held if _removable(self.keep, ledger)]
        with self._lock:
            self._held += [h for h in held if not _removable(self.keep, h[1])]
        if not gone:
            return []
        cluster.release([j for _, ledger in gone for j in ledger.live_job_ids()])
        removed = []
        for store, _ in gone:
            try:
                store.remove()
            except OSError as exc:
                log.warning(
                    "could not remove the folder of batch %s (keep=%r): %s", store.name, self.keep, exc
                )
            else:
                removed.append(store.path)
        log.debug("removed %d batch folder(s) (keep=%r)", len(removed), self.keep)
        return removed


def _removable(keep: str, ledger: Ledger) -> bool:
    if keep == "all" or not ledger.done:
        return False
    counts = ledger.counts()
    return keep == "none" or counts.failed + counts.cancelled == 0
