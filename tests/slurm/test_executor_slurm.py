"""The Executor against the real SLURM test cluster (4 nodes, 2 CPUs each)."""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import corral
from corral.backends.slurm_text import parse_config
from corral.engine.policy import PollPolicy

from ..unit.fakes import client_only_module
from .helpers import cluster, squeue, wait_for, wait_running

pytestmark = pytest.mark.usefixtures("fresh_queue")


def where(x: int) -> tuple[int, str]:
    return x * x, os.environ["SLURMD_NODENAME"]


def where_slowly(x: int) -> tuple[int, str]:
    time.sleep(0.01)
    return where(x)


def fail(message: str) -> None:
    raise ValueError(message)


def echo(*args: object, **kwargs: object) -> tuple[object, ...]:
    return args, kwargs


def sleep_then(seconds: float, value: object = None) -> object:
    time.sleep(seconds)
    return value


def test_map_of_1000_returns_in_order_across_nodes_with_one_sbatch(make_executor, commands) -> None:
    # Calls of 10 ms (10 s of work in all): long enough that spreading them pays. Trivial
    # calls are finished by the first element alone, which is faster (benchmarks/overhead.py).
    ex = make_executor("slurm")
    results = list(ex.map(where_slowly, range(1000)))
    assert [r[0] for r in results] == [x * x for x in range(1000)]
    assert len({node for _, node in results}) > 1, "all calls ran on one node"
    assert commands.counts()["sbatch"] == 1


def test_a_loop_of_1000_submits_makes_at_most_3_sbatch(make_executor, commands) -> None:
    # The idiom every concurrent.futures user writes: one submit per call, then as_completed.
    ex = make_executor("slurm")
    futures = [ex.submit(where, x) for x in range(1000)]
    done = {f.result()[0] for f in concurrent.futures.as_completed(futures, timeout=600)}
    assert done == {x * x for x in range(1000)}
    assert commands.counts()["sbatch"] <= 3


def test_a_batch_block_of_1000_submits_is_exactly_one_sbatch(make_executor, commands) -> None:
    ex = make_executor("slurm")
    with ex.batch():
        futures = [ex.submit(where, x) for x in range(1000)]
        time.sleep(0.1)  # twenty pauses' worth: the block still holds them
    assert [f.result(timeout=600)[0] for f in futures] == [x * x for x in range(1000)]
    assert commands.counts()["sbatch"] == 1


def test_tiny_calls_are_done_by_the_first_element_alone(make_executor, commands) -> None:
    ex = make_executor("slurm")
    results = ex.map(where, range(1000))
    batch = ex._batches[-1]  # held here: the executor keeps only weak references to done batches
    assert [r[0] for r in results] == [x * x for x in range(1000)]
    # The element whose Result the client read, call by call, from the streams.
    assert {batch.replay.element_of(i) for i in range(1000)} == {f"{batch.subs[0].job_id}_0"}
    assert commands.counts()["sbatch"] == 1


def test_a_long_map_spreads_over_every_node(make_executor) -> None:
    ex = make_executor("slurm")
    results = list(ex.map(lambda x: (sleep_then(1), os.environ["SLURMD_NODENAME"])[1], range(16)))
    assert set(results) == {"n1", "n2", "n3", "n4"}


@pytest.fixture
def max_array_size_4():
    """Lower MaxArraySize to 4 in slurm.conf, then restore it."""
    conf = Path("/etc/slurm/slurm.conf")
    original = conf.read_text()
    conf.write_text(re.sub(r"(?m)^MaxArraySize=.*$", "MaxArraySize=4", original))
    subprocess.run(["scontrol", "reconfigure"], check=True, timeout=60)
    try:
        wait_for(lambda: _max_array_size() == "4", 30, "MaxArraySize=4")
        yield
    finally:
        conf.write_text(original)
        subprocess.run(["scontrol", "reconfigure"], check=True, timeout=60)
        wait_for(lambda: _max_array_size() != "4", 30, "MaxArraySize restored")
        cluster("start")


def _max_array_size() -> str:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    return parse_config(out)["MaxArraySize"]


def test_a_map_larger_than_max_array_size_is_split(max_array_size_4, make_executor, commands) -> None:
    ex = make_executor("slurm")
    assert ex.cluster.backend.limits(ex.resources).max_array_size == 4  # discovered, not assumed
    assert [r[0] for r in ex.map(where, range(10), chunksize=1)] == [x * x for x in range(10)]
    assert commands.counts()["sbatch"] == 3  # 4 + 4 + 2 elements
    commands.reset()
    assert [r[0] for r in ex.map(where, range(50))] == [x * x for x in range(50)]
    assert commands.counts()["sbatch"] == 2  # 8 pulling elements: 4 + 4


def test_the_users_exception_comes_back_with_the_remote_traceback(make_executor) -> None:
    ex = make_executor("slurm")
    future = ex.submit(fail, "x")
    with pytest.raises(ValueError) as info:
        future.result(timeout=120)
    assert str(info.value) == "x"
    assert isinstance(info.value.__cause__, corral.RemoteTraceback)
    assert "raise ValueError(message)" in info.value.__cause__.tb
    assert re.fullmatch(r"\d+_0", future.job_id)


def test_external_scancel_ends_the_future_with_a_clear_error(make_executor) -> None:
    ex = make_executor("slurm")
    future = ex.submit(sleep_then, 300)
    wait_running(future)
    started = time.monotonic()
    subprocess.run(["scancel", future.job_id], check=True, timeout=30)
    with pytest.raises(corral.JobCancelledError, match=rf"job {future.job_id} ended CANCELLED"):
        future.result(timeout=60)
    assert time.monotonic() - started < 60


def test_a_node_dying_under_a_job_ends_its_future_with_node_fail(make_executor) -> None:
    # Neither resubmitted nor requeued (tests/faults/ has the requeue, test_pool_slurm.py the retries)
    ex = make_executor("slurm", max_retries=0, max_requeues=0)
    future = ex.submit(sleep_then, 300)
    wait_running(future)
    node = squeue("-j", future.job_id, "-o", "%N").strip()
    assert re.fullmatch(r"n[1-4]", node), node
    started = time.monotonic()
    cluster("stop-node", node[1:])
    try:
        with pytest.raises(corral.NodeFailureError, match=rf"job {future.job_id} ended NODE_FAIL on {node}"):
            future.result(timeout=120)
        assert time.monotonic() - started < 120
    finally:
        cluster("start-node", node[1:])


def test_cancelling_a_pending_future_removes_its_job(make_executor) -> None:
    ex = make_executor("slurm")
    blockers = list(ex._submit(sleep_then, [((300,), {})] * 8, 1))  # fill all 8 slots
    for blocker in blockers:
        wait_running(blocker)
    waiting = ex.submit(sleep_then, 0, "never")
    wait_for(lambda: waiting.job_id is not None, 30, "its burst of submits to go out")
    job = waiting.job_id
    wait_for(lambda: squeue("-j", job, "-o", "%T").strip() == "PENDING", 30, "the job to pend")
    assert waiting.cancel()
    assert waiting.cancelled()
    wait_for(
        lambda: squeue("-j", job, "-t", "PENDING", "-o", "%i").strip() == "", 30, "the job to leave the queue"
    )
    ex.cancel_all()


def test_leaving_with_on_an_exception_cancels_the_jobs(make_executor) -> None:
    ex = make_executor("slurm")
    with pytest.raises(KeyboardInterrupt), ex:
        futures = [ex.submit(sleep_then, 300) for _ in range(2)]
        for future in futures:  # running: their jobs must be cancelled, not just their calls
            wait_running(future)
        raise KeyboardInterrupt
    jobs = ",".join(f.job_id.split("_")[0] for f in futures)
    wait_for(lambda: squeue("-j", jobs, "-t", "PENDING,RUNNING", "-o", "%i").strip() == "", 30, "jobs to go")
    for future in futures:
        with pytest.raises(corral.JobCancelledError):
            future.result(timeout=10)


ODD = [
    'it\'s "quoted"',
    "`touch /tmp/corral-pwned`",
    "$(touch /tmp/corral-pwned)",
    "new\nline",
    "grüße ☃",
    "%A %a %j",
]


def test_odd_arguments_arrive_intact_in_a_work_dir_with_spaces(make_executor, workdir, monkeypatch) -> None:
    assert " " in workdir
    monkeypatch.setenv("CORRAL_TEST_SECRET", "hunter2-token")
    ex = make_executor("slurm")
    assert ex.submit(echo, *ODD, key=ODD[1]).result(timeout=120) == (tuple(ODD), {"key": ODD[1]})
    assert list(ex.map(echo, ODD)) == [((s,), {}) for s in ODD]
    assert not os.path.exists("/tmp/corral-pwned")
    scripts = list(Path(workdir).glob("*/subs/*.sh"))
    assert scripts and not any("hunter2" in p.read_text() for p in scripts)  # no environment in scripts


def never_queued(*args: object) -> None:
    """Its own name, so that its job name (corral-never_queued) is this test's alone."""


def test_bad_input_fails_clearly_and_leaves_nothing_in_the_queue(make_executor) -> None:
    with pytest.raises(corral.ResourceError, match="unknown resource option 'partiton'"):
        make_executor("slurm", partiton="debug")
    ex = make_executor("slurm")
    with pytest.raises(corral.SerializationError, match="call 2"):
        list(ex.map(never_queued, [1, 2, threading.Lock()]))
    nowhere = make_executor("slurm", partition="nosuch")
    with pytest.raises(corral.SubmissionError, match="Invalid partition name"):
        list(nowhere.map(never_queued, range(5)))
    assert squeue("-t", "all", "--name=corral-never_queued", "-o", "%i") == ""


def test_resources_reach_the_scheduler(make_executor) -> None:
    ex = make_executor(
        "slurm",
        time="0:10:00",
        cpus=2,
        memory="100M",
        job_name="corral-res",
        extra={"comment": "corral-test"},
    )
    future = ex.submit(sleep_then, 30)
    wait_running(future)
    fields = squeue("-j", future.job_id, "-o", "%l|%C|%m|%j|%k").strip()
    assert fields == "10:00|2|100M|corral-res|corral-test"
    ex.cancel_all()


def test_a_main_script_runs_on_slurm(tmp_path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, corral
            def node(i):
                return os.environ["SLURMD_NODENAME"]
            if __name__ == "__main__":
                with corral.Executor("slurm", directory="work") as ex:
                    print(len(list(ex.map(node, range(20)))), len(list(ex.map(lambda x: x, range(3)))))
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["20", "3"]


def test_auto_picks_slurm_here(tmp_path) -> None:
    assert corral.get_executor("auto", directory=str(tmp_path)).backend == "slurm"


def test_preview_is_the_script_that_is_submitted(make_executor, workdir) -> None:
    ex = make_executor("slurm", time="0:05:00", cpus=1)
    preview = ex.preview(calls=20)
    future = ex._submit(echo, [((i,), {}) for i in range(20)], None)[0]
    future.result(timeout=120)
    batch_dir = os.path.join(workdir, future.batch)
    submitted = Path(batch_dir, "subs", "0.sh").read_text()
    expected = preview.script.replace("<batch>", future.batch).replace("corral-FUNCTION", "corral-echo")
    assert "--array=0-7%1" in submitted  # the probe throttle shows in the preview too
    assert submitted == expected
    assert preview.argv[:2] == ["sbatch", "--parsable"]


def test_ctrl_c_while_the_with_block_waits_cancels_the_jobs(tmp_path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import time, corral
            def long_wait(seconds):
                time.sleep(seconds)
            if __name__ == "__main__":
                with corral.Executor("slurm", directory="work") as ex:
                    future = ex.submit(long_wait, 300)
                    while future.state.name != "RUNNING":
                        time.sleep(0.1)
                    print("waiting at the end of the block", flush=True)
            """
        )
    )
    # Ctrl-C must reach the script whatever this test inherited: started in the background
    # (SIGINT ignored, as CI may), the child would never see it.
    proc = subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "waiting at the end of the block"
        assert squeue("--name=corral-long_wait", "-t", "RUNNING", "-o", "%i").strip()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) != 0
    finally:
        proc.kill()
    wait_for(lambda: not squeue("--name=corral-long_wait", "-o", "%i").strip(), 30, "the job to be cancelled")


def test_scancel_of_an_array_with_pending_elements_ends_every_future_quickly(make_executor) -> None:
    ex = make_executor("slurm")
    futures = ex._submit(sleep_then, [((300,), {})] * 12, 1)  # 12 elements on 8 slots: 4 pend
    wait_for(lambda: sum(f.state is corral.JobState.RUNNING for f in futures) == 8, 60, "8 calls to run")
    job = futures[0].job_id.split("_")[0]
    started = time.monotonic()
    subprocess.run(["scancel", job], check=True, timeout=30)
    for future in futures:  # SLURM keeps no record of the pending ones: they must not wait for LOST
        with pytest.raises(corral.JobCancelledError, match="ended CANCELLED"):
            future.result(timeout=60)
    assert time.monotonic() - started < 60


def element_spans(elements: list[str]) -> list[tuple[str, str]]:
    """(Start, End) of each array element as sacct records them, once all have ended."""
    spans: dict[str, tuple[str, str]] = {}

    def recorded() -> bool:
        argv = ["sacct", "-n", "-X", "-P", "-j", ",".join(elements), "-o", "JobID,Start,End"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
        for line in out.splitlines():
            job, start, end = line.split("|")
            spans[job] = (start, end)
        return all(e in spans and "Unknown" not in spans[e] for e in elements)

    wait_for(recorded, 60, "sacct to record every element's end")
    return [spans[e] for e in elements]


def test_max_workers_limits_the_whole_executor_on_slurm(make_executor) -> None:
    # Five submits (one batch) and a map of three under max_workers=2: SLURM's own start and
    # end times of the elements show at most two at once (one ending in the second another
    # starts: not both).
    ex = make_executor("slurm", max_workers=2)
    with ex.batch():
        futures = [ex.submit(sleep_then, 3, i) for i in range(5)]
    results = ex.map(sleep_then, [3] * 3, range(5, 8))
    mapped = ex._batches[-1]  # kept alive by the iterator until the end of the test
    assert [f.result(timeout=300) for f in futures] + list(results) == list(range(8))
    elements = sorted({f.job_id or "" for f in futures})
    elements += [sub.element(i) for sub in mapped.subs for i in range(sub.plan.elements)]
    spans = [(start, end) for start, end in element_spans(elements) if start not in ("None", "Unknown")]
    assert len(spans) >= 3  # the submits' elements, and the map's elements that started
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    assert most <= 2


# -- FAILURES (issue 11, item 10): a job-level failure on SLURM names its exit code, the key
# -- line of the element's stderr, and a hint for a module the node cannot import.


def exit_hard(code: int) -> None:
    os._exit(code)


@pytest.fixture
def accounted_executor(workdir: str) -> Iterator[corral.Executor]:
    """An executor whose grace outlasts slurmdbd's lag: for a second or two after an array
    element ends, sacct lists it under a bare job id, so its exit code is not known yet."""
    policy = PollPolicy(outcome_grace=5.0, scheduler_min=0.5, scheduler_max=3.0)
    cluster = corral.Cluster(corral.get_backend("slurm"), workdir, policy=policy)
    yield corral.Executor(cluster=cluster)
    cluster.close()


def test_a_module_the_node_cannot_import_is_named_with_exit_code_and_hint_on_slurm(
    accounted_executor: corral.Executor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helpers_mod = client_only_module(tmp_path, monkeypatch)
    with pytest.raises(corral.JobFailedError) as caught:
        accounted_executor.submit(helpers_mod.double, 2).result(timeout=120)
    monkeypatch.delitem(sys.modules, "helpers_mod")
    error = caught.value
    assert error.exit_code == 1 and "(exit code 1)" in str(error)  # from sacct: squeue has none
    assert error.key_line == "ModuleNotFoundError: No module named 'helpers_mod'"
    assert error.hint.startswith("the nodes could not import module 'helpers_mod': install it there")
    assert f"\n  {error.key_line}\n  hint: {error.hint}\n" in str(error)


def test_a_hard_exit_in_a_call_is_reported_with_its_exit_code_on_slurm(
    accounted_executor: corral.Executor,
) -> None:
    with pytest.raises(corral.JobFailedError, match=r"ended FAILED on n\d \(exit code 3\)") as caught:
        accounted_executor.submit(exit_hard, 3).result(timeout=120)
    assert (caught.value.exit_code, caught.value.signal) == (3, None)
