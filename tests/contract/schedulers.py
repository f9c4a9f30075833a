"""The backends every contract test runs on, and how to have each one's scheduler up: the
real SLURM test cluster and the real SGE cell are started by their scripts (idempotent)."""

from __future__ import annotations

from ..sge.helpers import cell
from ..slurm.helpers import cluster

BACKENDS = ["local", "slurm", "sge"]


def start(name: str) -> None:
    """Make sure the scheduler behind backend ``name`` runs (the local one always does)."""
    if name == "slurm":
        cluster("start")
    elif name == "sge":
        cell("start")
