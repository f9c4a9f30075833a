"""Failures that explain themselves (issue 11, items 10-12 and 14): a job-level failure names
the exit code or signal and quotes the key line of the stderr, with a hint for a module the
node cannot import; remote tracebacks name the user's file and line; the local backend
reports a job-level failure as soon as the process is gone; Ctrl-C in a task script's exit
wait cancels its local jobs and exits 130."""

from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

import cloudpickle
import pytest

import corral
from corral.backends.local import LocalBackend
from corral.engine.endings import hint_for, key_line
from corral.engine.policy import PollPolicy
from corral.job import ElementStatus, JobState
from corral.store.pickling import dumps
from corral.worker.checkpoint import Resume

from .fakes import client_only_module

ROOT = Path(__file__).resolve().parents[2]

TRACEBACK = """\
some output the call printed
Traceback (most recent call last):
  File "/opt/x.py", line 3, in <module>
    import helpers_mod
ModuleNotFoundError: No module named 'helpers_mod'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/opt/x.py", line 5, in <module>
    raise RuntimeError("second")
RuntimeError: second
  extra context the exception printed
cleanup: closing files
"""


def test_the_key_line_is_the_exception_that_ends_the_last_traceback() -> None:
    assert key_line(TRACEBACK) == "RuntimeError: second"  # not the last line printed
    assert key_line(TRACEBACK.split("During")[0]) == "ModuleNotFoundError: No module named 'helpers_mod'"
    interrupted = "Traceback (most recent call last):\n  File 'x'\nKeyboardInterrupt\n"
    assert key_line(interrupted) == "KeyboardInterrupt"


def test_without_a_traceback_the_key_line_is_the_last_that_names_an_error() -> None:
    stderr = "starting\nslurmstepd: error: *** JOB 7 ON n1 CANCELLED ***\nbye\n"
    assert key_line(stderr) == "slurmstepd: error: *** JOB 7 ON n1 CANCELLED ***"
    assert key_line("MemoryError\n") == "MemoryError"
    assert key_line("all is well\n") == ""


@pytest.mark.parametrize(
    ("key", "module"),
    [
        ("ModuleNotFoundError: No module named 'helpers_mod'", "'helpers_mod'"),
        ("ModuleNotFoundError: No module named 'pkg.sub'", "'pkg.sub'"),
        ("ImportError: cannot import name 'f' from 'tools' (/x/tools.py)", "'tools'"),
        ("ImportError: module 'jobs' on this node has no task 'run'", "'jobs'"),
    ],
)
def test_an_import_error_gets_a_hint_naming_the_module(key: str, module: str) -> None:
    hint = hint_for(key)
    assert hint.startswith(f"the nodes could not import module {module}: install it there")
    assert "define the function in the script" in hint


def test_other_errors_get_no_hint() -> None:
    assert hint_for("ValueError: No module named 'x'") == ""
    assert hint_for("") == ""


def test_the_error_names_the_exit_code_or_signal_key_line_and_hint() -> None:
    key = "ModuleNotFoundError: No module named 'm'"
    error = corral.errors.job_error(
        JobState.FAILED, job_id="7_0", call=0, batch="b", reason="exit code 1", exit_code=1,
        key_line=key, hint=hint_for(key), stderr_tail="Traceback ...",
    )  # fmt: skip
    text = str(error)
    assert "ended FAILED (exit code 1) without a result" in text
    assert f"\n  {key}\n  hint: the nodes could not import module 'm'" in text
    assert (error.exit_code, error.signal) == (1, None)
    again = pickle.loads(pickle.dumps(error))  # futures' exceptions travel (attach, processes)
    assert (again.key_line, again.hint, again.exit_code) == (error.key_line, error.hint, 1)


@pytest.fixture
def slow_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A grace period no test outlives: a failure reported at all was reported without it."""
    monkeypatch.setenv("CORRAL_OUTCOME_GRACE", "600")


@pytest.fixture
def executor(workdir: str, slow_grace: None) -> Iterator[corral.Executor]:
    with corral.Executor("local", directory=workdir) as made:
        yield made


def hard_exit(code: int) -> None:
    os._exit(code)


def sleep_then_exit(seconds: float, code: int) -> None:
    time.sleep(seconds)
    os._exit(code)


def kill_myself() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.timeout(60)
def test_a_hard_exit_is_reported_at_once_with_its_exit_code(executor: corral.Executor) -> None:
    with pytest.raises(corral.JobFailedError, match=r"ended FAILED on localhost \(exit code 3\)") as caught:
        executor.submit(hard_exit, 3).result()
    assert (caught.value.exit_code, caught.value.signal) == (3, None)


@pytest.mark.timeout(60)
def test_a_process_killed_by_a_signal_is_reported_with_the_signal(executor: corral.Executor) -> None:
    with pytest.raises(corral.JobFailedError, match=r"killed by signal 9 \(SIGKILL\)") as caught:
        executor.submit(kill_myself).result()
    assert (caught.value.exit_code, caught.value.signal) == (None, signal.SIGKILL)


@pytest.mark.timeout(60)
def test_a_time_limit_is_reported_as_soon_as_the_process_is_gone(workdir: str, slow_grace: None) -> None:
    with corral.Executor("local", directory=workdir, time="0:00:01") as executor:
        with pytest.raises(corral.JobTimeoutError, match="ended TIMEOUT on localhost") as caught:
            executor.submit(time.sleep, 300).result()
    assert caught.value.signal == signal.SIGTERM
    assert "signal" not in caught.value.reason  # corral's own SIGTERM says nothing of the call


@pytest.mark.timeout(120)
def test_a_module_the_node_cannot_import_is_named_with_a_hint(
    executor: corral.Executor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helpers_mod = client_only_module(tmp_path, monkeypatch)
    with pytest.raises(corral.JobFailedError) as caught:
        executor.submit(helpers_mod.double, 2).result()
    monkeypatch.delitem(sys.modules, "helpers_mod")
    error = caught.value
    assert error.exit_code == 1 and "(exit code 1)" in str(error)
    assert error.key_line == "ModuleNotFoundError: No module named 'helpers_mod'"
    assert error.hint.startswith("the nodes could not import module 'helpers_mod': install it there")
    assert f"\n  {error.key_line}\n  hint: {error.hint}\n" in str(error)


def wait_for_file(path: str) -> str:
    while not os.path.exists(path):
        time.sleep(0.02)
    return path


@pytest.mark.timeout(120)
def test_a_call_whose_directory_is_gone_fails_with_the_reason_and_later_calls_run(
    workdir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slow_grace: None
) -> None:
    monkeypatch.setenv("CORRAL_LOCAL_SLOTS", "1")  # the second call waits for the first
    gone, flag = tmp_path / "gone", tmp_path / "flag"
    gone.mkdir()
    with corral.Executor("local", directory=workdir) as executor:
        blocker = executor.submit(wait_for_file, str(flag))
        monkeypatch.chdir(gone)
        stranded = executor.submit(pause, 0)  # its job starts in ``gone``, once it is removed
        monkeypatch.chdir(tmp_path)
        gone.rmdir()
        flag.touch()
        assert blocker.result() == str(flag)
        with pytest.raises(corral.JobFailedError, match=r"could not start: \[Errno 2\]") as caught:
            stranded.result()
        assert str(gone) in caught.value.reason
        assert executor.submit(pause, 0.1).result() == 0.1  # the backend still runs calls


class ReportsAfterTheOutcome(LocalBackend):
    """A local backend whose status query returns only once the element has ended: the
    outcome is written after the poll loop's scan of that tick, before the element is final
    (the race a zero grace must not lose)."""

    def poll(self, job_ids: Sequence[str]) -> dict[str, ElementStatus]:
        statuses = super().poll(job_ids)
        while any(not s.state.is_final for s in statuses.values()):
            time.sleep(0.01)
            statuses = super().poll(job_ids)
        return statuses


def pause(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.mark.timeout(120)
def test_an_outcome_written_just_before_the_process_ends_is_never_a_failure(workdir: str) -> None:
    policy = PollPolicy(outcome_grace=600, scheduler_min=0.01, scheduler_max=0.01)
    cluster = corral.Cluster(ReportsAfterTheOutcome(), workdir, policy=policy)
    with corral.Executor(cluster=cluster, max_retries=0) as executor:  # a false failure would stand
        assert [executor.submit(pause, 0.2).result() for _ in range(3)] == [0.2] * 3
        assert list(executor.map(pause, [0.1] * 4)) == [0.1] * 4
        failing = executor.submit(hard_exit, 4)  # and a real failure is still one, at once
        with pytest.raises(corral.JobFailedError, match=r"exit code 4"):
            failing.result()
    cluster.close()


SCRIPT = """\
import corral

def helper(x):
    raise ValueError(f"bad {x}")

def compute(x):
    def inner():
        return helper(x)
    return inner()

if __name__ == "__main__":
    with corral.Executor("local") as executor:
        try:
            executor.submit(compute, 1).result()
        except ValueError as error:
            print(error.__cause__)
"""


def run_script(path: Path, code: str) -> subprocess.CompletedProcess[str]:
    path.write_text(code)
    return subprocess.run(
        [sys.executable, str(path)], cwd=path.parent, capture_output=True, text=True, timeout=120,
        env={**os.environ, "CORRAL_DIR": str(path.parent / "work")},
    )  # fmt: skip


def test_a_remote_traceback_names_the_script_its_lines_and_shows_them(tmp_path: Path) -> None:
    script = tmp_path / "my_script.py"
    out = run_script(script, SCRIPT)
    assert out.returncode == 0, out.stderr
    assert "<dynamic-code>" not in out.stdout
    for line, name, source in [
        (9, "compute", "return inner()"),
        (8, "inner", "return helper(x)"),
        (4, "helper", 'raise ValueError(f"bad {x}")'),
    ]:
        assert f'File "{script}", line {line}, in {name}\n    {source}\n' in out.stdout, out.stdout


def test_a_function_passed_as_an_argument_keeps_its_file_name(tmp_path: Path) -> None:
    script = tmp_path / "my_script.py"
    code = SCRIPT.replace("executor.submit(compute, 1)", "executor.submit(apply, compute, 1)")
    out = run_script(script, code.replace("if __name__", "def apply(f, x):\n    return f(x)\n\nif __name__"))
    assert out.returncode == 0, out.stderr
    assert f'File "{script}", line 4, in helper\n    raise ValueError' in out.stdout, out.stdout


def test_the_docs_traceback_example_shows_the_scripts_file_name(tmp_path: Path) -> None:
    page = (ROOT / "docs" / "executor.md").read_text()
    errors = page[page.index("## Errors") :]
    example = re.search(r"```python\n(.*?)```", errors, re.S)
    assert example is not None and "print(error.__cause__)" in example.group(1)
    script = tmp_path / "example.py"
    out = run_script(script, example.group(1))
    assert out.returncode == 0, out.stderr
    assert f'File "{script}", line ' in out.stdout, out.stdout


def test_code_sent_by_value_keeps_its_file_name_in_nested_functions_and_resumes(tmp_path: Path) -> None:
    source = tmp_path / "user_script.py"
    source.write_text(SCRIPT.split("if __name__")[0])
    scope: dict[str, object] = {"__name__": "__main__"}  # defined in a script: sent by value
    exec(compile(source.read_text(), str(source), "exec"), scope)
    for payload in (dumps(scope["compute"]), dumps(Resume(scope["compute"], 1))):
        loaded = cloudpickle.loads(payload)
        fn, args = (loaded.fn, loaded.args) if isinstance(loaded, Resume) else (loaded, (1,))
        with pytest.raises(ValueError, match="bad 1") as caught:
            fn(*args)
        frames = traceback.extract_tb(caught.value.__traceback__)[1:]
        assert [(f.filename, f.name, f.lineno) for f in frames] == [
            (str(source), "compute", 9),
            (str(source), "inner", 8),
            (str(source), "helper", 4),
        ]


TASK_SCRIPT = """\
import os, sys, time, corral

corral.set_defaults(backend="local", directory=sys.argv[1])

@corral.task
def sleeper(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(300)

if __name__ == "__main__":
    sleeper.distribute(sys.argv[2] + "/0")
    sleeper.distribute(sys.argv[2] + "/1")
    print("submitted", flush=True)
"""


def restore_sigint() -> None:
    """The child's Ctrl-C must raise KeyboardInterrupt whatever this process inherited (a
    shell's background job starts with SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.timeout(120)
def test_ctrl_c_at_a_task_scripts_exit_cancels_its_local_jobs_and_exits_130(tmp_path: Path) -> None:
    script, pids = tmp_path / "tasks.py", tmp_path / "pids"
    script.write_text(TASK_SCRIPT)
    pids.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "work"), str(pids)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=restore_sigint,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "submitted\n"
        while len(list(pids.iterdir())) < 2 or any(p.stat().st_size == 0 for p in pids.iterdir()):
            time.sleep(0.05)  # both calls run: the script now waits at exit
        running = [int(p.read_text()) for p in pids.iterdir()]
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "Exception ignored" not in stderr and "KeyboardInterrupt" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("corral: interrupted")]
    ids = f"L{proc.pid}-1, L{proc.pid}-2"  # the script's first two local jobs
    assert lines == [f"corral: interrupted; cancelled 2 call(s) of local job(s) {ids}"]
    assert all(gone(pid) for pid in running)


CHECKPOINT_SCRIPT = """\
import time, corral

class Count(corral.Checkpointable):
    def __init__(self):
        self.done = 0

    def __call__(self, n):
        while self.done < n:
            time.sleep(0.1)
            self.done += 1
        raise ValueError(f"counted {self.done}")

if __name__ == "__main__":
    with corral.Executor("local", time="0:02", max_requeues=5) as executor:
        try:
            executor.submit(Count(), 30).result()
        except ValueError as error:
            print(error)
            print(error.__cause__)
"""


@pytest.mark.timeout(120)
def test_a_checkpoint_of_a_scripts_class_is_saved_on_the_node_and_keeps_its_file_name(tmp_path: Path) -> None:
    # On the node the worker runs as __main__: saving the checkpoint (our pickler, run there)
    # must not send the worker's own functions by value.
    script = tmp_path / "counting.py"
    out = run_script(script, CHECKPOINT_SCRIPT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("counted 30\n"), out.stdout
    assert (
        f'File "{script}", line 11, in __call__\n    raise ValueError(f"counted {{self.done}}")\n'
        in out.stdout
    )
