"""What is kept of a batch once its results are in: ``keep=`` of the Executor and the Pool.

======== =========================================================================
keep     a batch folder, once every call of it ended and the results were read
======== =========================================================================
"all"    stays (the Executor's default: ``future.stdout()``, ``corral logs`` later)
"failed" stays only if a call of it failed or was cancelled (the Pool's default: as
         with ``multiprocessing``, nothing is left behind when all went well)
"none"   is removed
======== =========================================================================

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
from collections.abc import Iterable

from ..engine.cluster import Cluster
from ..engine.tracking import BatchState

log = logging.getLogger(__name__)

#: The values of ``keep``.
KEEPS = ("all", "failed", "none")


def check_keep(keep: object) -> str:
    """``keep`` itself, or a ValueError that lists the choices."""
    if keep not in KEEPS:
        raise ValueError(f"keep must be one of {', '.join(map(repr, KEEPS))}, not {keep!r}")
    return str(keep)


def removable(keep: str, batch: BatchState) -> bool:
    """Whether ``keep`` lets ``batch`` go: it ended, and (for "failed") every call of it
    returned a value."""
    if keep == "all" or not batch.done:
        return False
    counts = batch.ledger.counts()
    return keep == "none" or counts.done == len(batch.futures)


def retire(cluster: Cluster, batches: Iterable[BatchState], keep: str) -> list[str]:
    """Remove the folders of the ``batches`` that ``keep`` lets go; their paths. A folder
    that cannot be removed is logged and left."""
    gone = [b for b in batches if removable(keep, b)]
    if not gone:
        return []
    cluster.release(gone)
    removed = []
    for batch in gone:
        try:
            batch.store.remove()
        except OSError as exc:
            log.warning("could not remove the folder of batch %s (keep=%r): %s", batch.store.name, keep, exc)
        else:
            removed.append(batch.store.path)
    log.debug("removed %d batch folder(s) (keep=%r)", len(removed), keep)
    return removed
