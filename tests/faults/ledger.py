"""What the fault tests run, and how they count: every call that completes leaves one file
in a folder, so a call that completed twice (work lost and redone after it had finished)
shows up as two files."""

from __future__ import annotations

import collections
import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator

import corral


def mark(folder: str, x: int, seconds: float) -> int:
    """Work for ``seconds``, then record that call ``x`` completed."""
    time.sleep(seconds)
    with open(os.path.join(folder, f"{x}.{os.getpid()}"), "w"):
        pass
    return x * 10


class Count(corral.Checkpointable):
    """Counts to ``n`` in steps of a second; its progress travels with the object."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.done = 0
        self.runs = 0

    def __call__(self, n: int) -> tuple[int, int]:
        self.runs += 1
        while self.done < n:
            time.sleep(1)
            self.done += 1
        mark(self.folder, n, 0)
        return self.done, self.runs


def completions(folder: str) -> collections.Counter[int]:
    return collections.Counter(int(name.split(".")[0]) for name in os.listdir(folder))


def assert_each_completed_once(folder: str, calls: int) -> None:
    counts = completions(folder)
    assert sorted(counts) == list(range(calls)), f"calls never completed: {set(range(calls)) - set(counts)}"
    twice = {call: n for call, n in counts.items() if n > 1}
    assert not twice, f"calls completed more than once: {twice}"


@contextlib.contextmanager
def release_requeued() -> Iterator[list[str]]:
    """SLURM holds a requeued job for 120 s (BeginTime) before it may start again. This
    lets such jobs start 3 s later, so that a test with two requeues takes one minute, not
    five; what corral does is the same either way. Yields the job ids released."""
    released: list[str] = []
    stop = threading.Event()

    def nudge() -> None:
        waiting: set[str] = set()  # released, still pending until its start time comes
        while not stop.wait(1.0):
            out = subprocess.run(
                ["squeue", "-h", "-t", "PD", "-o", "%i|%r"], capture_output=True, text=True, timeout=30
            ).stdout
            held = {
                job
                for job, _, reason in (line.partition("|") for line in out.split())
                if reason == "BeginTime"
            }
            for job in held - waiting:
                # Not "now": a job restarted on its node within the second it was killed there
                # is refused by slurmd ("Job credential revoked") and ends FAILED.
                subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now+3"], timeout=30)
                released.append(job)
            waiting = held

    thread = threading.Thread(target=nudge, daemon=True)
    thread.start()
    try:
        yield released
    finally:
        stop.set()
        thread.join(timeout=30)
