"""A client that maps ``mark`` over many calls on SLURM and never returns on its own: the
tests kill it (SIGKILL) and attach to its batch from another process.

    python -m tests.faults.client FOLDER WORK_DIR CALLS SECONDS
"""

from __future__ import annotations

import sys
import time

import corral
from tests.faults.ledger import mark

if __name__ == "__main__":
    folder, work, calls, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    ex = corral.Executor(backend="slurm", directory=work)
    futures = ex.map(mark, [folder] * calls, range(calls), [seconds] * calls)
    print("submitted", flush=True)
    time.sleep(3600)
