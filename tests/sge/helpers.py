"""Helpers for the SGE integration tests: drive the test cell (scripts/test-sge.sh)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "test-sge.sh"


def cell(*args: str, timeout: float = 600) -> str:
    """Run scripts/test-sge.sh; a failure fails the test (it never skips)."""
    out = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        pytest.fail(f"test-sge.sh {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def clear_queue() -> None:
    """Delete every job of ours left in the cell."""
    subprocess.run(["qdel", "-u", "root"], capture_output=True, timeout=30, check=False)
