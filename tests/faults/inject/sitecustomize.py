"""Loaded by every Python that has this folder on PYTHONPATH (the jobs of a fault test):
with CORRAL_FAULT_OUTCOME_DIR set, workers write outcomes there instead of the batch's
results/ folder, and the test moves them in later, as a slow shared filesystem would
show them. Test code only: corral itself knows nothing of it."""

from __future__ import annotations

import os

if os.environ.get("CORRAL_FAULT_OUTCOME_DIR"):
    from corral.store import batch as store

    def _write_elsewhere(self, call, attempt, outcome):  # type: ignore[no-untyped-def]
        folder = os.environ["CORRAL_FAULT_OUTCOME_DIR"]
        name = f"{self.name}.{store.task_name(call, attempt)}.pkl"
        self.transport.write_bytes(os.path.join(folder, name), store.encode_outcome(outcome))

    store.BatchStore.write_outcome = _write_elsewhere  # type: ignore[method-assign]
