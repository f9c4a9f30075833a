"""The local backend on its own (no engine): a launch that fails fails its element alone and
leaves the backend usable, with no descriptor left open; element logs are the user's alone;
how a process ended (exit code, signal) is reported."""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.backends.base import ArraySpec
from corral.backends.local import LocalBackend
from corral.job import ElementStatus, JobState
from corral.resources import Resources

WAIT = 60.0  # seconds a test waits for an element to end before it fails (never a speed test)


@pytest.fixture
def backend() -> Iterator[LocalBackend]:
    made = LocalBackend(slots=1)  # one at a time: a later element starts only after the earlier
    yield made
    made.close()


def submit(backend: LocalBackend, folder: Path, body: str, *, chdir: Path | None = None) -> str:
    """Submit one element running the bash ``body``, its logs in ``folder``; return its id."""
    folder.mkdir(exist_ok=True)
    script = folder / f"job{len(list(folder.glob('*.sh')))}.sh"
    script.write_text(f"#!/bin/bash\n{body}\n")
    spec = ArraySpec(
        batch_dir=str(folder), sub=0, elements=1, resources=Resources(), job_name="t",
        python="python3", chdir=str(chdir or folder),
    )  # fmt: skip
    pattern = (str(folder / "job-{job}_{index}.out"), str(folder / "job-{job}_{index}.err"))
    return backend.submit(spec, str(script), pattern) + "_0"


def final(backend: LocalBackend, element: str) -> ElementStatus:
    end = time.monotonic() + WAIT
    while time.monotonic() < end:
        status = backend.poll([element.split("_")[0]])[element]
        if status.state.is_final:
            return status
        time.sleep(0.02)
    raise AssertionError(f"{element} never ended: {backend.poll([element.split('_')[0]])}")


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_launch_in_a_removed_directory_fails_that_element_and_the_backend_goes_on(
    backend: LocalBackend, tmp_path: Path
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    gone.rmdir()
    final(backend, submit(backend, tmp_path / "warm-up", "true"))  # the thread runs, its fds are open
    before = open_fds()
    failed = final(backend, submit(backend, tmp_path / "a", "true", chdir=gone))
    assert failed.state is JobState.FAILED
    assert failed.reason.startswith("could not start: [Errno 2]") and str(gone) in failed.reason
    assert open_fds() == before  # the logs opened for it were closed
    later = final(backend, submit(backend, tmp_path / "b", "echo still here"))
    assert later.state is JobState.COMPLETED
    assert (tmp_path / "b" / f"job-{later.element_id}.out").read_text() == "still here\n"


def test_a_log_that_cannot_be_opened_fails_its_element_only(backend: LocalBackend, tmp_path: Path) -> None:
    folder = tmp_path / "a"
    element = submit(backend, folder, "sleep 0.5")
    first = final(backend, element)  # its logs exist now; the next job of this folder is the 2nd
    assert first.state is JobState.COMPLETED
    elsewhere = tmp_path / "victim"
    elsewhere.write_text("untouched\n")
    os.symlink(elsewhere, folder / f"job-L{os.getpid()}-2_0.err")  # where the next element's log goes
    before = open_fds()
    planted = final(backend, submit(backend, folder, "echo oops >&2"))
    assert planted.state is JobState.FAILED and "could not start" in planted.reason
    assert "Too many levels of symbolic links" in planted.reason  # O_NOFOLLOW: never followed
    assert elsewhere.read_text() == "untouched\n"
    assert open_fds() == before  # the .out log opened before the .err one failed was closed
    assert final(backend, submit(backend, tmp_path / "b", "true")).state is JobState.COMPLETED


def test_element_logs_are_readable_by_their_owner_only(backend: LocalBackend, tmp_path: Path) -> None:
    previous = os.umask(0o022)  # the usual umask, which would give 0644
    try:
        element = final(backend, submit(backend, tmp_path / "a", "echo out; echo err >&2")).element_id
    finally:
        os.umask(previous)
    for stream in ("out", "err"):
        log = tmp_path / "a" / f"job-{element}.{stream}"
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        assert log.read_text() == f"{stream}\n"


def test_exit_codes_and_signals_are_reported(backend: LocalBackend, tmp_path: Path) -> None:
    code = final(backend, submit(backend, tmp_path / "a", "exit 3"))
    assert (code.state, code.exit_code, code.signal) == (JobState.FAILED, 3, None)
    killed = final(backend, submit(backend, tmp_path / "b", "kill -9 $$"))
    assert (killed.state, killed.exit_code, killed.signal) == (JobState.FAILED, None, signal.SIGKILL)
    assert killed.describe_end() == "killed by signal 9 (SIGKILL)"
    ok = final(backend, submit(backend, tmp_path / "c", "true"))
    assert (ok.state, ok.exit_code, ok.describe_end()) == (JobState.COMPLETED, 0, "")


def test_a_running_element_reports_no_exit_code(backend: LocalBackend, tmp_path: Path) -> None:
    element = submit(backend, tmp_path / "a", "sleep 30")
    end = time.monotonic() + WAIT
    while backend.poll([element.split("_")[0]])[element].state is not JobState.RUNNING:
        assert time.monotonic() < end, "the element never started"
        time.sleep(0.02)
    running = backend.poll([element.split("_")[0]])[element]
    assert (running.exit_code, running.signal) == (None, None)
    backend.cancel([element])
    cancelled = final(backend, element)
    assert (cancelled.state, cancelled.signal) == (JobState.CANCELLED, signal.SIGTERM)
