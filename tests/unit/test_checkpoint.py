"""Time-limit warnings, checkpoints and requeues on the local backend, which sends SIGUSR1
``signal_grace`` seconds before its enforced time limit and runs an element again when its
worker asks (see corral.checkpoint). The same path on real SLURM is in tests/faults/."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cloudpickle
import pytest

import corral
from corral.backends.slurm_text import explain_kill, sbatch_options
from corral.job import ElementStatus, JobState
from corral.store.batch import BatchStore
from corral.store.streams import Start
from corral.transports.local import LocalTransport
from corral.worker.checkpoint import Interrupted, StopSignals

from .fakes import call_output, stream_records

DATA = Path(__file__).parent.parent / "data"


class Count(corral.Checkpointable):
    """Counts to ``n`` in steps of 0.1 s, keeping its progress in ``self``."""

    def __init__(self) -> None:
        self.done = 0
        self.runs = 0

    def __call__(self, n: int) -> tuple[int, int]:
        self.runs += 1
        while self.done < n:
            time.sleep(0.1)
            self.done += 1
        return self.done, self.runs


class SavesToFile(corral.Checkpointable):
    """Keeps its state in a file of its own and resumes with another function."""

    def __call__(self, path: str, n: int) -> int:
        for i in range(n):
            # Whole or not at all: the time-limit warning stops the call wherever it is, and
            # a stop between open's truncation and the write left an empty file to resume from.
            with open(f"{path}.tmp", "w") as out:
                out.write(str(i))
            os.replace(f"{path}.tmp", path)
            time.sleep(0.1)
        return n

    def checkpoint(self, path: str, n: int) -> corral.Resume:
        return corral.Resume(finish_from_file, path, n)


def finish_from_file(path: str, n: int) -> str:
    with open(path) as saved:
        return f"resumed at {saved.read()} of {n}"


def marks(folder: str, x: int, seconds: float) -> int:
    """An ordinary call that records each time it finished."""
    time.sleep(seconds)
    with open(os.path.join(folder, f"{x}.{os.getpid()}"), "w"):
        pass
    return x


def test_a_checkpointable_call_needing_three_time_limits_completes_through_requeues(make_executor) -> None:
    ex = make_executor("local", time="0:03", max_requeues=10)  # warned 1.5 s in: about 1 s of work a run
    future = ex.submit(Count(), 40)  # 4 s of work, at most 1.5 s a run: three runs at least
    done, runs = future.result(timeout=120)
    assert done == 40 and runs >= 3  # each run counts itself: the object came back with its progress
    store = BatchStore(os.path.join(ex.cluster.root, future.batch), LocalTransport())
    saved = store.read_checkpoint(0)
    assert saved is not None and saved[1] == runs - 1  # requeued once per extra run
    # The call's own stderr, across its runs, as the client and `corral logs` give it.
    own = future.stderr()
    assert own == call_output(store, 0, 0, "err")
    assert own.count("resumes from its checkpoint") == runs - 1
    # Each stop is noted in the job's own stderr (the scheduler's file), not the call's.
    (element,) = {Path(p).name for p in glob.glob(os.path.join(store.path, "streams", "*.log"))}
    notes = store.read_text(store.element_log(element.removesuffix(".log"), "err"))
    assert notes.count("stopped (time limit near); checkpoint saved") == runs - 1


def test_without_a_checkpoint_a_time_limit_names_the_limit(make_executor) -> None:
    ex = make_executor("local", time="0:02")
    future = ex.submit(time.sleep, 30)
    with pytest.raises(corral.JobTimeoutError) as caught:
        future.result(timeout=60)
    message = str(caught.value)
    assert "time limit 0:00:02" in message and "no checkpoint to resume from" in message


def test_requeues_stop_at_max_requeues_and_the_error_says_so(make_executor) -> None:
    ex = make_executor("local", time="0:02", max_requeues=1)
    future = ex.submit(Count(), 1000)
    with pytest.raises(
        corral.JobTimeoutError, match=r"requeued from a checkpoint 1 time\(s\), max_requeues=1"
    ):
        future.result(timeout=60)


def test_checkpoint_may_resume_with_another_function(make_executor, tmp_path: Path) -> None:
    ex = make_executor("local", time="0:02", max_requeues=2)
    state = tmp_path / "state.txt"
    result = ex.submit(SavesToFile(), str(state), 1000).result(timeout=60)
    assert result.startswith("resumed at ") and result.endswith(" of 1000")
    assert 0 < int(result.split()[2]) < 1000


def test_after_a_warning_an_element_requeues_itself_for_calls_it_has_not_started(
    make_executor, tmp_path: Path
) -> None:
    ex = make_executor("local", time="0:03")  # warned at 1.5 s
    folder = tmp_path / "marks"
    folder.mkdir()
    # one element takes all six calls of 0.5 s in turn: 3 s of work in a 3 s limit
    futures = ex.map(marks, [str(folder)] * 6, range(6), [0.5] * 6, chunksize=6)
    assert list(futures) == list(range(6))
    finished = sorted(int(name.split(".")[0]) for name in os.listdir(folder))
    assert finished == list(range(6))  # each ran to the end once: nothing lost, nothing twice
    assert len({name.split(".")[1] for name in os.listdir(folder)}) >= 2  # in two processes or more


def test_max_requeues_zero_asks_for_no_requeue_and_no_warning() -> None:
    from corral.backends.base import ArraySpec
    from corral.resources import Resources

    def options(**resources: object) -> list[str]:
        spec = ArraySpec("/w/b", 0, 2, Resources.from_options(**resources), "j", "python", "/w")
        return sbatch_options(spec)

    assert "--requeue" in options() and not any(o.startswith("--signal") for o in options())
    assert "--signal=B:USR1@120" in options(time=60)
    assert "--signal=B:USR1@30" in options(time=1)  # at most half the limit
    assert "--signal=B:USR1@45" in options(time=60, signal_grace=45)
    assert options(time=60, max_requeues=0)[-1] == "--no-requeue"
    with pytest.raises(corral.ResourceError, match="max_requeues=-1"):
        options(max_requeues=-1)


def test_a_memory_kill_is_read_from_the_recorded_stderr() -> None:
    stderr = (DATA / "slurm" / "job_stderr_memory_kill.txt").read_text()
    failed = ElementStatus("19172_0", JobState.FAILED, "n1")
    explained = explain_kill(failed, stderr)
    assert explained.state is JobState.OUT_OF_MEMORY
    assert explained.reason == "used 313 MB of memory, 100 MB requested"
    assert explain_kill(failed, "some other error") == failed
    running = ElementStatus("19172_0", JobState.RUNNING, "n1")
    assert explain_kill(running, stderr) == running
    oom = ElementStatus("7_0", JobState.FAILED, "n2")
    assert explain_kill(oom, "Detected 1 oom-kill event(s) in StepId=7.batch").state is (
        JobState.OUT_OF_MEMORY
    )


def test_a_job_step_cancelled_under_a_failed_job_is_read_as_a_preemption() -> None:
    """The worker as an srun step (srun=): preemption cancels the step and the job ends
    FAILED (recorded on the test cluster), which must not count as the call's failure."""
    stderr = (DATA / "slurm" / "job_stderr_step_preempted.txt").read_text()
    explained = explain_kill(ElementStatus("21799_0", JobState.FAILED, "n1"), stderr)
    assert explained.state is JobState.PREEMPTED and "step was cancelled" in explained.reason
    cancelled = ElementStatus("21799_0", JobState.CANCELLED, "n1")  # scancel: stays cancelled
    assert explain_kill(cancelled, stderr) == cancelled


def test_signals_interrupt_only_checkpointable_calls_and_only_while_they_run() -> None:
    signals = StopSignals()
    previous = signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGTERM)
    signals.install()
    try:
        with pytest.raises(Interrupted, match="time limit near"):
            with signals.running(checkpointable=True, on_warning=True):
                os.kill(os.getpid(), signal.SIGUSR1)
                time.sleep(5)
        assert signals.warned and not signals.terminated
        with signals.running(checkpointable=True, on_warning=False):  # no requeues left: runs on
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.05)
        with pytest.raises(Interrupted):  # a warning that came earlier interrupts at once
            with signals.running(checkpointable=True, on_warning=True):
                pass
        os.kill(os.getpid(), signal.SIGTERM)  # between calls: only noted
        assert signals.terminated
    finally:
        signal.signal(signal.SIGUSR1, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def test_sigterm_ends_an_ordinary_call_at_once_and_saves_a_checkpointable_one(tmp_path: Path) -> None:
    script = tmp_path / "victim.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, time
            from corral.worker.checkpoint import Interrupted, StopSignals
            signals = StopSignals()
            signals.install()
            signals.before_exit = lambda: print("results written", flush=True)  # the worker's flush
            try:
                with signals.running(checkpointable=sys.argv[1] == "yes", on_warning=True):
                    print("ready", flush=True)
                    time.sleep(30)
            except Interrupted as stop:
                print("interrupted", stop.why, flush=True)
            """
        )
    )
    for checkpointable, expected in [
        ("yes", (0, "interrupted SIGTERM")),
        ("no", (-signal.SIGTERM, "results written")),
    ]:
        proc = subprocess.Popen(
            [sys.executable, str(script), checkpointable], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        started = time.monotonic()
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
        assert (proc.returncode, out.strip()) == expected
        assert time.monotonic() - started < 10


def test_a_checkpoint_that_fails_is_the_calls_error(make_executor) -> None:
    class Broken(Count):
        def checkpoint(self, n: int) -> corral.Resume:
            raise RuntimeError("disk full")

    ex = make_executor("local", time="0:02")
    with pytest.raises(RuntimeError, match="disk full"):
        ex.submit(Broken(), 1000).result(timeout=60)


def test_resume_needs_a_callable() -> None:
    with pytest.raises(TypeError, match="needs a callable"):
        corral.Resume(42)  # type: ignore[arg-type]
    resume = cloudpickle.loads(cloudpickle.dumps(corral.Resume(max, 1, 2, default=0)))
    assert (resume.fn, resume.args, resume.kwargs) == (max, (1, 2), {"default": 0})


def fails_first(x: int) -> int:
    if x == 0:
        raise ValueError("the first call fails")
    time.sleep(1)
    return x


def test_a_strict_element_that_failed_a_call_before_its_requeue_still_fails(workdir: str) -> None:
    corral.set_defaults(backend="local", directory=workdir)
    step = corral.task(time="0:03")(fails_first)
    report = corral.task(square)
    # One element, five calls: the first fails at once, the other four take 4 s in all, so
    # the element is requeued (warned at 1.5 s) and ends in its second run.
    with corral.Batch(max_size=5):
        refs = [step.distribute(x) for x in range(5)]
    after = report.after(refs[1]).distribute(3)  # waits for the whole element, strictly
    assert [r.result(timeout=60) for r in refs[1:]] == [1, 2, 3, 4]
    (batch,) = Path(workdir).glob("fails_first-*")
    store = BatchStore(str(batch), LocalTransport())
    (element,) = [p.stem for p in (batch / "streams").glob("*.log")]
    starts = [r for r in stream_records(store, element) if isinstance(r, Start)]
    assert len({s.pid for s in starts}) == 2  # the element was requeued: a new process ran the last calls
    with pytest.raises(
        corral.JobCancelledError, match=r"dependency never satisfied: L\d+-\d+_0 ended FAILED"
    ):
        after.result(timeout=60)


def square(x: int) -> int:
    return x * x
