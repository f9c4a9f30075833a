"""Helpers for the integration tests: drive the test cluster and wait for things."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import corral
from corral import JobState

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "test-cluster.sh"


def cluster(*args: str, timeout: float = 600) -> str:
    out = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        pytest.fail(f"test-cluster.sh {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def squeue(*args: str) -> str:
    return subprocess.run(["squeue", "-h", *args], capture_output=True, text=True, timeout=30).stdout


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def wait_running(future: corral.CorralFuture, timeout: float = 60) -> None:
    wait_for(lambda: future.state is JobState.RUNNING, timeout, f"{future!r} to run")
