"""Dependencies between batches without a cluster: the conditions, the shell command's
here-document, ``resolve``/``explain`` on real BatchState objects, the worker's ``strict`` and
``stdin`` plan options, and shell commands run by :func:`corral.frontends.commands.run_command`."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import cloudpickle
import pytest

import corral
from corral.backends.base import ArraySpec
from corral.backends.local import LocalBackend
from corral.backends.sge import SgeBackend
from corral.backends.slurm import SlurmBackend
from corral.engine.dependencies import Needs, Resolution, explain, resolve
from corral.engine.futures import mark_cancelled
from corral.engine.planning import Plan
from corral.engine.policy import PollPolicy
from corral.engine.request import Request
from corral.engine.tracking import BatchState, SubState
from corral.errors import DependencyError, JobTimeoutError, SubmissionError
from corral.frontends.commands import ShellCommandError, ShellResult, run_command
from corral.job import Condition, Dependency, JobState
from corral.resources import Resources
from corral.retry import RetryPolicy
from corral.store.batch import BatchStore
from corral.store.protocol import WorkerOptions
from corral.transports.base import CommandResult
from corral.transports.local import LocalTransport
from corral.worker.run import main, pack_function, run_element

from .fakes import FakeSlurm, call_output, outcomes

FINAL = [s for s in JobState if s.is_final]
LIVE = [s for s in JobState if not s.is_final]

# -- Condition.met_by -------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(JobState), ids=lambda s: s.name)
def test_met_by_table(state: JobState) -> None:
    assert Condition.OK.met_by(state) is (state is JobState.COMPLETED)
    assert Condition.ANY.met_by(state) is state.is_final  # a job that has not ended lets nothing run
    assert Condition.NOTOK.met_by(state) is (state.is_final and state is not JobState.COMPLETED)
    # SLURM's after: once started, or ended without starting (cancelled while pending)
    assert Condition.STARTED.met_by(state) is (state is not JobState.PENDING)


def test_the_final_states_are_the_ones_conditions_are_asked_about() -> None:
    assert set(LIVE) == {JobState.PENDING, JobState.RUNNING, JobState.SUSPENDED, JobState.REQUEUED}
    assert [s for s in FINAL if Condition.OK.met_by(s)] == [JobState.COMPLETED]
    assert [s for s in FINAL if not Condition.NOTOK.met_by(s)] == [JobState.COMPLETED]
    assert {c.value for c in Condition} == {"ok", "any", "notok", "started"}


# -- the shell command's here-document ----------------------------------------------------------


def array_spec(
    command: str | None = None, *, elements: int = 3, python: str = "/opt/venv/bin/python"
) -> ArraySpec:
    return ArraySpec(
        batch_dir="/home/ana/my project/.corral/sbatch-20261121-140000-abcdef",
        sub=0,
        elements=elements,
        resources=Resources(),
        job_name="sbatch",
        python=python,
        chdir="/home/ana/my project",
        command=command,
    )


COMMANDS = [
    'echo "$HOSTNAME" $HOME ${USER:-nobody}',
    "echo `hostname` $(date +%s) $((1 + 2))",
    "printf '%s\\n' 'single' \"double\" \\\\back\\\\slash \\$dollar",
    "for i in 1 2; do\n  echo $i\ndone",
    "echo a \\\necho b",  # a trailing backslash continues nothing inside a quoted document
    "cat <<EOF\ninner $HOME\nEOF",
    "echo one\nCORRAL_COMMAND\necho two",
    "CORRAL_COMMAND\nCORRAL_COMMAND_\necho after both",
    "CORRAL_COMMAND \n CORRAL_COMMAND\n'CORRAL_COMMAND'",
    "  leading and trailing blanks  \n\ttab\n\nblank line above",
    "echo 'unterminated quote",
    "echo ✓ ünïcödé",
    "",
]


def test_no_command_no_document() -> None:
    assert array_spec().worker_stdin() == ""
    assert array_spec(None).command is None


def test_the_document_is_quoted_and_holds_the_command_verbatim() -> None:
    command = "echo \"$HOSTNAME\" `whoami` \\ 'q'\nsecond line"
    stdin = array_spec(command).worker_stdin()
    assert stdin == f" <<'CORRAL_COMMAND'\n{command}\nCORRAL_COMMAND"


def test_trailing_newlines_are_not_doubled() -> None:
    assert array_spec("echo hi\n\n").worker_stdin() == " <<'CORRAL_COMMAND'\necho hi\nCORRAL_COMMAND"


@pytest.mark.parametrize(
    ("command", "delimiter"),
    [
        ("echo CORRAL_COMMAND", "CORRAL_COMMAND"),  # not a line of its own: no clash
        ("CORRAL_COMMAND ", "CORRAL_COMMAND"),  # not equal to it either
        ("a\nCORRAL_COMMAND\nb", "CORRAL_COMMAND_"),
        ("CORRAL_COMMAND", "CORRAL_COMMAND_"),
        ("CORRAL_COMMAND\nCORRAL_COMMAND_", "CORRAL_COMMAND__"),
        ("CORRAL_COMMAND_\nCORRAL_COMMAND", "CORRAL_COMMAND__"),
    ],
)
def test_the_delimiter_grows_while_a_line_of_the_command_equals_it(command: str, delimiter: str) -> None:
    stdin = array_spec(command).worker_stdin()
    assert stdin.startswith(f" <<'{delimiter}'\n")
    assert stdin.endswith(f"\n{delimiter}")
    assert delimiter not in command.splitlines()


def bash_output(script: str, env: dict[str, str] | None = None) -> str:
    base = {"PATH": os.environ["PATH"], "HOME": "/client/home", "HOSTNAME": "client-host", "USER": "ana"}
    result = subprocess.run(
        ["bash", "-c", script], env={**base, **(env or {})}, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_bash_reads_back_exactly_the_command(command: str) -> None:
    """The document through real bash: nothing is expanded, and it ends where it should."""
    script = "cat" + array_spec(command).worker_stdin() + "\necho END-OF-SCRIPT\n"
    assert bash_output(script) == command.rstrip("\n") + "\nEND-OF-SCRIPT\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_the_slurm_and_local_scripts_hand_the_command_to_the_worker_unexpanded(
    tmp_path: Path, command: str
) -> None:
    """The whole rendered script run with bash, a stand-in for python printing its
    arguments and then what it reads on stdin."""
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/bash\nprintf 'arg:%s\\n' \"$@\"\necho ---\ncat\n")
    fake_python.chmod(0o755)
    spec = array_spec(command, python=str(fake_python))
    expected_stdin = "---\n" + command.rstrip("\n") + "\n"
    slurm = tmp_path / "slurm.sh"
    slurm.write_text(SlurmBackend(LocalTransport()).render(spec))
    out = bash_output(f"bash {slurm}", {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_JOB_ID": "42"})
    assert out.endswith(f"arg:2\narg:42_2\n{expected_stdin}")
    assert f"arg:{spec.batch_dir}\n" in out
    local = tmp_path / "local.sh"
    local.write_text(LocalBackend().render(spec))
    out = bash_output(f"bash {local}", {"CORRAL_ARRAY_TASK_ID": "1", "CORRAL_ELEMENT_ID": "L7_1"})
    assert out.endswith(f"arg:1\narg:L7_1\n{expected_stdin}")


# -- resolve and explain on real batches --------------------------------------------------------


def batch(
    tmp_path: Path,
    n_calls: int,
    subs: Sequence[tuple[Plan, str | None]],
    hint: str = "a",
    retry: RetryPolicy | None = None,
) -> BatchState:
    store = BatchStore.create(str(tmp_path / "work"), hint, LocalTransport())
    states = [
        SubState(
            plan, array_spec(elements=plan.elements), os.path.join(store.path, "subs", f"{plan.sub}.sh"), job
        )
        for plan, job in subs
    ]
    return BatchState(store, n_calls, states, lambda b, c: False, retry)  # type: ignore[arg-type]


def static(
    n_calls: int,
    chunk: int,
    job: str | None,
    tmp_path: Path,
    hint: str = "a",
    retry: RetryPolicy | None = None,
) -> BatchState:
    elements = -(-n_calls // chunk)
    return batch(
        tmp_path, n_calls, [(Plan(0, elements, "static", ((0, n_calls, 0),), chunk=chunk), job)], hint, retry
    )


def needs(condition: Condition, *calls: tuple[BatchState, int]) -> Needs:
    return Needs(condition, tuple(calls))


def test_a_needed_call_of_a_static_plan_is_its_element(tmp_path: Path) -> None:
    a = static(6, 2, "42", tmp_path)
    assert a.dependency_of(3) == [("42", 1)]
    assert resolve(needs(Condition.OK, (a, 3))) == Resolution(True, Dependency(Condition.OK, ("42_1",)))
    both = resolve(needs(Condition.NOTOK, (a, 2), (a, 3), (a, 5)))  # 2 and 3 share element 1
    assert both == Resolution(True, Dependency(Condition.NOTOK, ("42_1", "42_2")))


def test_every_element_of_a_static_array_needed_is_the_whole_array(tmp_path: Path) -> None:
    a = static(6, 2, "42", tmp_path)
    every_call = resolve(needs(Condition.ANY, *((a, c) for c in range(6))))
    assert every_call.dependency == Dependency(Condition.ANY, ("42",))
    one_call_per_element = resolve(needs(Condition.OK, (a, 4), (a, 0), (a, 3)))
    assert one_call_per_element.dependency == Dependency(Condition.OK, ("42",))
    assert resolve(needs(Condition.OK, (a, 0), (a, 5))).dependency == Dependency(
        Condition.OK, ("42_0", "42_2")
    )


def test_notok_on_every_element_still_names_each_element(tmp_path: Path) -> None:
    """Condition.NOTOK asks that *each* needed call ended in failure. SLURM keeps that for a
    list of elements (afternotok:42_0:42_1:42_2), but reads afternotok on a whole array as
    "the array ended and not every task completed" (slurmctld's test_job_dependency, with
    test_job_array_complete): one failed element is enough. So the whole-array shortcut must
    not be taken for notok, or B runs on SLURM after a single failure, while the local
    backend (each element) and resolve itself (a call that already completed is unmet) would
    not run it."""
    a = static(3, 1, "42", tmp_path)
    every = resolve(needs(Condition.NOTOK, (a, 0), (a, 1), (a, 2)))
    assert every.dependency == Dependency(Condition.NOTOK, ("42_0", "42_1", "42_2"))


def test_a_static_batch_split_in_two_submissions(tmp_path: Path) -> None:
    plans = [
        (Plan(0, 2, "static", ((0, 4, 0),), chunk=2), "42"),
        (Plan(1, 1, "static", ((4, 6, 0),), chunk=2), "43"),
    ]
    a = batch(tmp_path, 6, plans)
    assert a.dependency_of(5) == [("43", 0)]
    assert resolve(needs(Condition.OK, (a, 0), (a, 2), (a, 4))).dependency == Dependency(
        Condition.OK, ("42", "43")
    )
    assert resolve(needs(Condition.OK, (a, 1), (a, 5))).dependency == Dependency(Condition.OK, ("42_0", "43"))


def test_a_pull_plan_needs_every_array_that_may_run_the_call(tmp_path: Path) -> None:
    plans = [
        (Plan(0, 2, "pull", ((0, 10, 0),), first_element=0, total_elements=3), "42"),
        (Plan(1, 1, "pull", ((0, 10, 0),), first_element=2, total_elements=3), "43"),
    ]
    a = batch(tmp_path, 10, plans)
    assert a.dependency_of(7) == [("42", None), ("43", None)]
    assert resolve(needs(Condition.OK, (a, 7))) == Resolution(True, Dependency(Condition.OK, ("42", "43")))
    a.subs[1].job_id = None  # deferred by MaxSubmitJobs: no id yet
    assert a.dependency_of(7) is None
    assert resolve(needs(Condition.OK, (a, 7))) == Resolution(False)


def test_a_call_whose_job_has_no_id_yet_holds_the_batch_back(tmp_path: Path) -> None:
    a = static(4, 1, None, tmp_path)
    b = static(2, 1, "77", tmp_path, "b")
    assert a.dependency_of(0) is None
    waiting = resolve(needs(Condition.OK, (b, 0), (a, 2)))
    assert waiting == Resolution(False) and waiting.unmet == ""
    a.subs[0].job_id = "42"
    assert resolve(needs(Condition.OK, (b, 0), (a, 2))) == Resolution(
        True, Dependency(Condition.OK, ("77_0", "42_2"))
    )


def test_a_resubmitted_attempt_is_waited_for_in_its_new_array(tmp_path: Path) -> None:
    a = static(4, 1, "42", tmp_path, retry=RetryPolicy(max_retries=1, retry_on=ValueError))
    a.ledger.taken(2, 0, "42_2")  # call 2 failed once and is retried in a small pull array
    assert [type(d).__name__ for d in a.ledger.finished(2, 0, False, ValueError("once"), "42_2")] == ["Retry"]
    assert resolve(needs(Condition.OK, (a, 2))) == Resolution(False)  # not resubmitted yet
    retry = Plan(1, 1, "pull", ((2, 3, 1),), first_element=0, total_elements=1)
    a.add_sub(SubState(retry, array_spec(elements=1), "", "50"))
    assert resolve(needs(Condition.OK, (a, 2), (a, 3))).dependency == Dependency(Condition.OK, ("50", "42_3"))


def test_finished_calls_that_met_the_condition_are_dropped(tmp_path: Path) -> None:
    a = static(3, 1, "42", tmp_path)
    a.futures[0].set_result(1)
    a.futures[1].set_exception(ValueError("boom"))
    mark_cancelled(a.futures[2])
    assert [a.state_of(c) for c in range(3)] == [JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED]
    assert resolve(needs(Condition.OK, (a, 0))) == Resolution(True, None)
    assert resolve(needs(Condition.NOTOK, (a, 1), (a, 2))) == Resolution(True, None)
    assert resolve(needs(Condition.ANY, (a, 0), (a, 1), (a, 2))) == Resolution(True, None)
    b = static(2, 1, "43", tmp_path, "b")
    mixed = resolve(needs(Condition.OK, (a, 0), (b, 1)))
    assert mixed == Resolution(True, Dependency(Condition.OK, ("43_1",)))


def test_a_finished_call_that_never_can_meet_the_condition_is_unmet(tmp_path: Path) -> None:
    a = static(3, 1, "42", tmp_path)
    a.futures[0].set_result(1)
    error = JobTimeoutError(state=JobState.TIMEOUT, job_id="42_1", call=1, batch=a.store.name)
    a.futures[1].set_exception(error)
    failed = resolve(needs(Condition.OK, (a, 0), (a, 1), (a, 2)))
    assert not failed.ready and failed.dependency is None
    assert "call 1 of batch" in failed.unmet and repr(a.store.name) in failed.unmet
    assert "ended TIMEOUT" in failed.unmet and "condition='ok'" in failed.unmet
    assert "job 42_1" in failed.unmet
    succeeded = resolve(needs(Condition.NOTOK, (a, 1), (a, 0)))
    assert not succeeded.ready
    assert "call 0 of batch" in succeeded.unmet and "ended COMPLETED" in succeeded.unmet
    assert "condition='notok'" in succeeded.unmet


def test_an_unsubmitted_call_that_was_cancelled_names_no_job(tmp_path: Path) -> None:
    a = static(2, 1, None, tmp_path)
    mark_cancelled(a.futures[1])
    unmet = resolve(needs(Condition.OK, (a, 1))).unmet
    assert "(job (never submitted))" in unmet and "ended CANCELLED" in unmet


def test_explain_names_the_calls_that_ended_against_the_condition(tmp_path: Path) -> None:
    a = static(4, 1, "42", tmp_path)
    waiting = needs(Condition.OK, (a, 0), (a, 1), (a, 2), (a, 3))
    assert explain(waiting) == ""  # nothing ended yet
    a.futures[0].set_result(0)
    assert explain(waiting) == ""  # what ended met the condition
    a.futures[2].set_exception(KeyError(2))
    one = explain(waiting)
    assert "call 2 of batch" in one and "ended FAILED" in one and "more" not in one
    a.futures[3].set_exception(KeyError(3))
    assert explain(waiting) == one + " (and 1 more)"
    assert explain(needs(Condition.NOTOK, (a, 2), (a, 3))) == ""
    assert "call 0 of batch" in explain(needs(Condition.NOTOK, (a, 0), (a, 2)))


# -- the engine: the dependency goes into the script, an unmet one submits nothing -------------

QUICK = PollPolicy(
    files_min=0.01, files_max=0.05, scheduler_min=0.05, scheduler_max=0.05, outcome_grace=0.2, lost_after=30
)


def fails_on_one(x: int) -> int:
    if x == 1:
        raise ValueError("one")
    return x


@pytest.fixture
def fake_cluster(workdir: str) -> Iterator[tuple[corral.Cluster, FakeSlurm]]:
    fake = FakeSlurm(run_jobs=False)
    cluster = corral.Cluster(SlurmBackend(fake), workdir, policy=QUICK)
    yield cluster, fake
    cluster.close()


def test_the_submitted_script_waits_for_the_needed_elements(fake_cluster) -> None:
    cluster, fake = fake_cluster
    a = cluster.submit(
        Request(
            fn=fails_on_one,
            calls=[((i,), {}) for i in range(3)],
            resources=Resources(),
            chunksize=1,
            strict=True,
        )
    )
    assert a.subs[0].job_id == "100"
    b = cluster.submit(
        Request(
            fn=fails_on_one,
            calls=[((9,), {})],
            resources=Resources(),
            chunksize=1,
            needs=needs(Condition.NOTOK, (a, 1), (a, 2)),
        )
    )
    assert b.subs[0].job_id == "101"
    script = Path(b.subs[0].script_path).read_text()
    assert "#SBATCH --dependency=afternotok:100_1:100_2\n" in script
    assert "#SBATCH --kill-on-invalid-dep=yes\n" in script
    assert b.subs[0].spec.dependency == Dependency(Condition.NOTOK, ("100_1", "100_2"))
    assert BatchStore(a.store.path, LocalTransport()).read_plan(0).strict is True
    assert BatchStore(b.store.path, LocalTransport()).read_plan(0).strict is False


def test_a_dependency_that_can_never_be_met_submits_nothing(fake_cluster) -> None:
    cluster, fake = fake_cluster
    fake.run_jobs = True  # the first batch runs at once, inside sbatch
    a = cluster.submit(
        Request(fn=fails_on_one, calls=[((i,), {}) for i in range(2)], resources=Resources(), chunksize=1)
    )
    assert a.futures[0].result(timeout=30) == 0
    with pytest.raises(ValueError, match="one"):
        a.futures[1].result(timeout=30)
    fake.run_jobs = False
    b = cluster.submit(
        Request(
            fn=fails_on_one,
            calls=[((5,), {}), ((6,), {})],
            resources=Resources(),
            needs=needs(Condition.OK, (a, 1)),
        )
    )
    assert fake.names().count("sbatch") == 1
    for future in b.futures:
        with pytest.raises(DependencyError, match="never submitted: it was to run after call 1") as info:
            future.result(timeout=30)
        assert info.value.state is JobState.CANCELLED
    ok = cluster.submit(
        Request(fn=fails_on_one, calls=[((7,), {})], resources=Resources(), needs=needs(Condition.OK, (a, 0)))
    )
    assert fake.names().count("sbatch") == 2  # call 0 completed: submitted with no dependency
    assert "--dependency" not in Path(ok.subs[0].script_path).read_text()
    assert ok.subs[0].spec.dependency is None


def test_a_condition_the_backend_cannot_keep_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    assert SgeBackend.conditions == frozenset({Condition.ANY})
    assert SlurmBackend.conditions == frozenset(Condition)
    assert LocalBackend().conditions == frozenset(Condition)
    cluster = corral.Cluster(SgeBackend(LocalTransport()), str(tmp_path / "cluster"), policy=QUICK)
    a = static(1, 1, "5", tmp_path)
    for condition in (Condition.OK, Condition.NOTOK):
        with pytest.raises(SubmissionError, match=f"condition='{condition.value}'; it can with: 'any'"):
            cluster.submit(
                Request(
                    fn=fails_on_one, calls=[((1,), {})], resources=Resources(), needs=needs(condition, (a, 0))
                )
            )
    assert not (tmp_path / "cluster").exists()


class QdelRecorder(LocalTransport):
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str], *, timeout: float) -> CommandResult:
        self.calls.append(tuple(argv))
        return CommandResult(tuple(argv), 0, "", "")


def test_sge_cancels_an_element_as_its_1_based_task() -> None:
    transport = QdelRecorder()
    SgeBackend(transport).cancel(["7_0", "7_4", "8", "12_10"])
    assert transport.calls == [("qdel", "7.1", "7.5", "8", "12.11")]


def test_which_backends_outlive_the_client() -> None:
    assert SlurmBackend.detached and SgeBackend.detached
    assert not LocalBackend().detached


# -- the worker: strict and stdin plans -----------------------------------------------------------


def make_batch(
    tmp_path: Path, fn: object, calls: list[tuple[tuple[object, ...], dict[str, object]]], **options: object
) -> BatchStore:
    store = BatchStore.create(str(tmp_path), "t", LocalTransport())
    store.write_batch({}, pack_function(fn), [cloudpickle.dumps(c) for c in calls])  # type: ignore[arg-type]
    plan = Plan(0, 1, "static", ((0, len(calls), 0),), chunk=len(calls))
    store.write_submission(0, plan.worker_plan(WorkerOptions(**options)), "#!/bin/bash\n")
    return store


def value(store: BatchStore, call: int) -> object:
    outcome = outcomes(store)[(call, 0)]
    assert outcome.ok, outcome.traceback
    return cloudpickle.loads(outcome.payload)


def with_command(command: str, x: int) -> tuple[str, int]:
    return command, x


@pytest.fixture
def as_a_job(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """worker.main sets CORRAL_IN_JOB and the umask for the rest of the process: undo both."""
    monkeypatch.setenv("CORRAL_IN_JOB", "")
    mask = os.umask(0o022)
    os.umask(mask)
    yield
    os.umask(mask)


@pytest.mark.parametrize(
    ("options", "xs", "code"),
    [
        ({"strict": True}, [0, 1, 2], 1),
        ({"strict": True}, [0, 2], 0),
        ({}, [0, 1, 2], 0),
        ({"strict": False}, [1], 0),
    ],
)
def test_a_strict_element_exits_1_when_a_call_failed(
    tmp_path: Path, as_a_job: None, options: dict[str, object], xs: list[int], code: int
) -> None:
    store = make_batch(tmp_path, fails_on_one, [((x,), {}) for x in xs], **options)
    assert main([store.path, "0", "0", "J_0"]) == code
    assert set(outcomes(store)) == {(i, 0) for i in range(len(xs))}  # every call ran, failed or not
    assert os.environ["CORRAL_IN_JOB"] == "J_0"


def test_the_worker_wants_four_arguments(as_a_job: None) -> None:
    assert main(["only", "three", "args"]) == 2


def test_a_stdin_plan_passes_the_command_as_first_argument(tmp_path: Path) -> None:
    command = 'echo "$HOSTNAME" `id -u` \\\nCORRAL_COMMAND\n'
    store = make_batch(tmp_path, with_command, [((1,), {}), ((2,), {})], stdin=True)
    assert run_element(store.path, 0, 0, "J_0", stdin=command) == (2, 0, 0)
    assert value(store, 0) == (command, 1) and value(store, 1) == (command, 2)


def test_a_stdin_plan_reads_the_command_from_standard_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("echo $HOME\nsecond line\n"))
    store = make_batch(tmp_path, with_command, [((3,), {})], stdin=True)
    run_element(store.path, 0, 0, "J_0")
    assert value(store, 0) == ("echo $HOME\nsecond line", 3)  # the document's own last newline goes


def test_without_stdin_in_the_plan_the_function_gets_only_its_arguments(tmp_path: Path) -> None:
    store = make_batch(tmp_path, with_command, [(("c", 4), {})])
    run_element(store.path, 0, 0, "J_0", stdin="ignored")
    assert value(store, 0) == ("c", 4)


def test_a_shell_command_runs_on_the_node_through_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_VALUE", "on the node")
    command = "echo \"$NODE_VALUE\" 'it''s'\necho err >&2"
    store = make_batch(tmp_path, run_command, [((), {})], stdin=True)
    assert run_element(store.path, 0, 0, "J_0", stdin=command) == (1, 0, 0)
    result = value(store, 0)
    assert result == ShellResult(command, 0, "on the node its\n", "err\n")
    assert call_output(store, 0, 0, "out") == "on the node its\n"  # copied as it came
    assert call_output(store, 0, 0, "err") == "err\n"
    failing = make_batch(tmp_path, run_command, [((), {})], stdin=True)
    assert run_element(failing.path, 0, 0, "J_0", stdin="echo no >&2; exit 3") == (1, 1, 0)  # not strict
    outcome = outcomes(failing)[(0, 0)]
    assert not outcome.ok and outcome.type_name == "corral.frontends.commands.ShellCommandError"
    error = cloudpickle.loads(outcome.payload)
    assert isinstance(error, ShellCommandError) and error.returncode == 3 and error.result.stderr == "no\n"


def test_the_rendered_local_script_feeds_the_command_to_the_real_worker(tmp_path: Path) -> None:
    """The local backend's script, run with bash as the backend would, with the real worker."""
    command = 'printf "%s|" "$CORRAL_ELEMENT_ID" \'$HOME\' `echo x`\nCORRAL_COMMAND\ntrue'
    store = make_batch(tmp_path, run_command, [((), {})], stdin=True)
    spec = ArraySpec(store.path, 0, 1, Resources(), "sbatch", sys.executable, str(tmp_path), command=command)
    script = tmp_path / "job.sh"
    script.write_text(LocalBackend().render(spec))
    env = {**os.environ, "CORRAL_ARRAY_TASK_ID": "0", "CORRAL_ELEMENT_ID": "L1_0"}
    env.pop("CORRAL_IN_JOB", None)
    done = subprocess.run(["/bin/bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = value(store, 0)
    assert isinstance(result, ShellResult)
    assert result.command == command
    assert result.stdout.startswith("L1_0|$HOME|x|")
    assert result.returncode == 0


# -- run_command ------------------------------------------------------------------------------------


def test_run_command_returns_the_output(capfd: pytest.CaptureFixture[str]) -> None:
    result = run_command("echo out; echo err >&2; printf 'no newline'")
    assert result == ShellResult("echo out; echo err >&2; printf 'no newline'", 0, "out\nno newline", "err\n")
    captured = capfd.readouterr()
    assert "out\nno newline" in captured.out and "err\n" in captured.err  # passed on as it came


def test_run_command_raises_on_a_non_zero_exit() -> None:
    lines = "; ".join(f"echo line{i} >&2" for i in range(15))
    with pytest.raises(ShellCommandError) as info:
        run_command(f"{lines}; exit 7")
    error = info.value
    assert error.returncode == 7 and error.result.returncode == 7
    assert error.result.stderr.splitlines() == [f"line{i}" for i in range(15)]
    message = str(error)
    assert "exited with code 7" in message
    assert "line14" in message and "line5" in message and "line4\n" not in message  # the last 10
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, ShellCommandError) and copy.result == error.result and str(copy) == message
    assert isinstance(error, corral.CorralError)


def test_run_command_reads_no_stdin_and_runs_in_bash() -> None:
    started = time.monotonic()
    result = run_command("cat; echo ${BASH_VERSION:+bash}")
    assert result.stdout == "bash\n"
    assert time.monotonic() - started < 20  # stdin is /dev/null, so cat does not wait
