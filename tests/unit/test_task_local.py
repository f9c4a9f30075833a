"""@task, Batch, sbatch and srun on the local backend (the real SLURM cluster: tests/slurm)."""

from __future__ import annotations

import concurrent.futures
import gc
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import corral
import corral.engine.budget
from corral import JobRef
from corral.job import Condition

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def local(workdir: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every task of these tests runs on the local backend, in the test's own work dir."""
    monkeypatch.setenv("CORRAL_OUTCOME_GRACE", "1")
    corral.set_defaults(backend="local", directory=workdir)
    return workdir


def batches(workdir: str) -> list[str]:
    return sorted(os.listdir(workdir)) if os.path.isdir(workdir) else []


@corral.task
def square(x: int) -> int:
    return x * x


@corral.task
def fail(message: str) -> None:
    raise KeyError(message)


@corral.task
def stamp(path: str) -> float:
    Path(path).write_text(str(time.time()))
    time.sleep(0.2)
    return time.time()


@corral.task
def distribute_inside(nested: bool) -> int:
    inner = square.options(allow_nested=True) if nested else square
    return inner.distribute(7).result(timeout=60)


def test_a_task_is_still_a_plain_function(local: str) -> None:
    assert square(4) == 16
    assert square.__name__ == "square" and square.__doc__ is None
    assert batches(local) == []  # nothing was submitted


def test_distribute_returns_at_once_and_the_ref_waits_for_the_value() -> None:
    ref = square.distribute(5)
    assert isinstance(ref, JobRef) and ref.job_id is not None
    assert ref.result(timeout=60) == 25
    assert ref.state is corral.JobState.COMPLETED and ref.done()


def test_the_callers_own_exception_comes_back() -> None:
    ref = fail.distribute("missing")
    with pytest.raises(KeyError, match="missing"):
        ref.result(timeout=60)
    assert ref.state is corral.JobState.FAILED


def test_options_and_after_return_new_functions_and_leave_the_original_alone() -> None:
    ref = square.distribute(1)
    g = square.after(ref)
    h = square.options(memory="2G", time="0:01:00")
    assert g is not square and h is not square
    assert square._after == () and square._options == {}
    assert g._after == (ref,) and g._options == {}
    assert h._options == {"memory": "2G", "time": "0:01:00"} and h._after == ()
    assert square.after(ref, condition="any")._condition is Condition.ANY
    with pytest.raises(corral.ResourceError, match="did you mean 'memory'"):
        square.options(memroy="2G")
    with pytest.raises(ValueError, match="condition='maybe'"):
        square.after(ref, condition="maybe")
    with pytest.raises(TypeError, match="JobRefs"):
        square.after(4.2)
    assert square.after("4242")._after == ("4242",)  # a job submitted outside corral
    assert g.distribute(3).result(timeout=60) == 9


def test_a_batch_bundles_calls_into_jobs_of_max_size(local: str) -> None:
    with corral.Batch(max_size=20) as batch:
        refs = [square.distribute(i) for i in range(45)]
        assert all(ref.job_id is None for ref in refs)  # no job before the flush
        with pytest.raises(corral.CorralError, match="open Batch"):
            refs[0].result()
    assert batch.refs == refs
    assert [ref.result(timeout=60) for ref in refs] == [i * i for i in range(45)]
    jobs = {ref.job_id for ref in refs}
    assert len(jobs) == 3  # 20 + 20 + 5 calls
    assert len(batches(local)) == 1  # one array
    assert corral.engine.budget.spent() == 1  # a batch counts once


def test_a_batch_mixes_functions_with_the_same_resources_and_groups_by_resources() -> None:
    with corral.Batch(max_size=10) as batch:
        squares = [square.distribute(i) for i in range(3)]
        failure = fail.distribute("x")
        bigger = square.options(cpus=2).distribute(9)
    assert len({r.job_id for r in [*squares, failure]}) == 1  # one job holds both functions
    assert bigger.job_id != squares[0].job_id
    assert [r.result(timeout=60) for r in squares] == [0, 1, 4]
    assert bigger.result(timeout=60) == 81
    with pytest.raises(KeyError):
        failure.result(timeout=60)
    assert len(batch.refs) == 5


def test_the_classic_pipeline_runs_in_order_on_the_local_backend(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "CORRAL_BACKEND": "local", "CORRAL_DIR": str(tmp_path / "work")}
    script = ROOT / "examples" / "task_pipeline.py"
    done = subprocess.run(
        [sys.executable, str(script), str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "runs in 5 jobs" in done.stdout
    check_pipeline(out)


def check_pipeline(out: Path) -> dict[str, object]:
    """Every run started after prepare ended, the summary after every run ended; 5 run jobs."""
    import json

    prepare = json.loads((out / "prepare.json").read_text())
    runs = [json.loads((out / f"run-{i:03d}.json").read_text()) for i in range(100)]
    summary = json.loads((out / "summary.json").read_text())
    assert all(run["start"] >= prepare["end"] for run in runs)
    assert all(summary["start"] >= run["end"] for run in runs)
    assert len({run["job"] for run in runs}) == 5
    expected = {str(i): sum(k * k for k in range(3 * i + 1)) for i in range(100)}
    assert summary["results"] == expected
    return summary


def test_a_later_call_in_the_same_batch_may_wait_for_an_earlier_one(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    with corral.Batch() as batch:
        a = stamp.distribute(str(first))
        b = stamp.after(a).distribute(str(second))
    assert batch.refs == [a, b]
    finished_a = a.result(timeout=60)
    b.result(timeout=60)
    assert float(second.read_text()) >= finished_a


def test_an_exception_in_a_batch_submits_nothing_even_after_garbage_collection(local: str) -> None:
    refs: list[JobRef[int]] = []
    with pytest.raises(RuntimeError, match="boom"), corral.Batch():
        refs += [square.distribute(i) for i in range(5)]
        raise RuntimeError("boom")
    gc.collect()
    time.sleep(0.5)
    assert batches(local) == [] and corral.engine.budget.spent() == 0
    assert all(ref.state is corral.JobState.CANCELLED for ref in refs)
    with pytest.raises(corral.CorralError, match="never submitted: the Batch block raised RuntimeError"):
        refs[0].result()
    with pytest.raises(corral.CorralError, match="will never run"):
        square.after(refs[0]).distribute(1)
    assert batches(local) == []


def test_a_call_waiting_for_a_failed_job_never_runs_and_says_why(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    bad = fail.distribute("no input")
    dependent = stamp.after(bad).distribute(str(marker))
    with pytest.raises(corral.DependencyError) as caught:
        dependent.result(timeout=60)
    assert "ended FAILED" in str(caught.value) and "condition='ok'" in str(caught.value)
    assert not marker.exists()
    # Once the failure is known, a new dependent is not even submitted.
    late = stamp.after(bad).distribute(str(marker))
    with pytest.raises(corral.DependencyError, match="never submitted"):
        late.result(timeout=60)
    assert not marker.exists()


def test_conditions_any_and_notok(tmp_path: Path) -> None:
    bad = fail.distribute("x")
    good = square.distribute(2)
    assert square.after(bad, condition="notok").distribute(3).result(timeout=60) == 9
    assert square.after(bad, good, condition="any").distribute(4).result(timeout=60) == 16
    with pytest.raises(corral.DependencyError):
        square.after(good, condition="notok").distribute(5).result(timeout=60)


def test_the_budget_stops_a_runaway_loop_before_the_limit(local: str) -> None:
    corral.set_defaults(submit_budget=25)
    refs = []
    with pytest.raises(corral.SubmissionBudgetError, match=r"corral\.Batch\(\)") as caught:
        for i in range(10_000):
            refs.append(square.distribute(i))
    assert len(refs) == 25 and len(batches(local)) == 25
    assert "submit_budget=25" in str(caught.value) and "executor.map" in str(caught.value)
    assert [r.result(timeout=60) for r in refs[:3]] == [0, 1, 4]


def test_the_default_budget_is_on(workdir: str) -> None:
    corral.set_defaults(backend="sequential")
    with pytest.raises(corral.SubmissionBudgetError, match="submit_budget=500"):
        for i in range(10_000):
            square.distribute(i)
    assert corral.engine.budget.spent() == 500 == len(batches(workdir))


def test_a_job_does_not_distribute_by_accident() -> None:
    with pytest.raises(corral.NestedSubmissionError, match="allow_nested=True"):
        distribute_inside.distribute(False).result(timeout=60)
    assert distribute_inside.distribute(True).result(timeout=60) == 49


def test_a_task_of_a_script_may_distribute_another_task_of_that_script(tmp_path: Path) -> None:
    script = tmp_path / "nested.py"
    script.write_text(
        "import corral\n\n"
        "@corral.task\n"
        "def inner(x):\n    return x + 1\n\n"
        "@corral.task\n"
        "def outer(x):\n    return inner.options(allow_nested=True).distribute(x).result(timeout=60) * 10\n\n"
        "if __name__ == '__main__':\n    print(outer.distribute(4).result(timeout=120))\n"
    )
    env = {**os.environ, "CORRAL_BACKEND": "local", "CORRAL_DIR": str(tmp_path / "work")}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "50"


def test_an_argument_that_cannot_be_pickled_fails_at_its_own_line_in_a_batch(local: str) -> None:
    with pytest.raises(corral.SerializationError, match="arguments of square"), corral.Batch():
        square.distribute(1)
        square.distribute(threading.Lock())  # type: ignore[arg-type]
    assert batches(local) == []


def test_sbatch_runs_the_command_as_written_on_the_node(tmp_path: Path, local: str) -> None:
    out = tmp_path / "host.txt"
    command = f"echo \"$HOSTNAME\" > {out}; echo '`not run here` $(nor this)'"
    ref = corral.sbatch(command)
    result = ref.result(timeout=60)
    assert isinstance(result, corral.ShellResult)
    assert out.read_text().strip() == os.uname().nodename
    assert result.returncode == 0 and result.stdout == "`not run here` $(nor this)\n"
    assert ref.stdout() == result.stdout  # the call's own log has it too
    script = next(Path(local).glob("sbatch-*/subs/0.sh")).read_text()
    assert command in script.splitlines()  # verbatim, on a line of its own


def test_srun_returns_the_exit_code_and_output() -> None:
    result = corral.srun("echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    ok = corral.srun("printf done")
    assert (ok.returncode, ok.stdout) == (0, "done")


def test_a_failing_command_fails_its_job_and_its_dependents() -> None:
    ref = corral.sbatch("exit 5")
    with pytest.raises(corral.ShellCommandError, match="exited with code 5") as caught:
        ref.result(timeout=60)
    assert caught.value.returncode == 5
    after = corral.sbatch("echo never", after=ref)
    with pytest.raises(corral.DependencyError):
        after.result(timeout=60)
    assert corral.srun("echo cleanup", after=ref, condition="notok").stdout == "cleanup\n"


def test_bad_input_fails_before_anything_is_submitted(local: str) -> None:
    with pytest.raises(corral.ResourceError, match="cpus"):
        corral.task(cpus=0)(lambda: None)
    with pytest.raises(ValueError, match="shell command"):
        corral.sbatch("   ")
    with pytest.raises(ValueError, match="max_size"):
        corral.Batch(max_size=0)
    with pytest.raises(corral.SerializationError):
        square.distribute(threading.Lock())  # type: ignore[arg-type]
    with pytest.raises(corral.ConfigError, match="profile"):
        square.options(profile="nowhere").distribute(1)
    assert batches(local) == []


def test_cancel_stops_a_running_job_and_one_that_has_not_started(tmp_path: Path) -> None:
    slow = corral.sbatch("sleep 30")
    waiting = stamp.after(slow).distribute(str(tmp_path / "never"))
    deadline = time.monotonic() + 30
    while slow.state is not corral.JobState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    assert waiting.cancel()
    assert slow.cancel()
    with pytest.raises(corral.JobCancelledError):
        slow.result(timeout=60)
    with pytest.raises(concurrent.futures.CancelledError):  # it never started: a cancelled future
        waiting.result(timeout=60)
    assert waiting.state is corral.JobState.CANCELLED and not slow.cancel()
    assert not (tmp_path / "never").exists()
