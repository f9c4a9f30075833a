"""The steps backend without a cluster: the allocation read from SLURM_* variables recorded
on the test cluster (tests/data/steps), the srun command built for a spec, the refusal outside
an allocation, ``auto`` never choosing it; and its elements run through a stand-in ``srun``
on PATH (which drops its options and runs the command), so that the local backend's contract
(results, logs, cancel) is seen to hold with srun in front of every element."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest

import corral
from corral.backends import get_backend, resolve_name
from corral.backends.base import ArraySpec
from corral.backends.steps import (
    Allocation,
    StepsBackend,
    parse_allocation,
    parse_counts,
    signalled,
    step_argv,
)
from corral.environment import Environment
from corral.errors import ConfigError, CorralError, ResourceError
from corral.job import ElementStatus, JobState
from corral.resources import Resources
from corral.transports.base import CommandResult
from corral.transports.local import LocalTransport

DATA = Path(__file__).resolve().parents[1] / "data" / "steps"
#: sbatch -N4 -n8 --mem=3000 on the test cluster (2 CPUs, 4000 MB per node)
N4_N8 = Allocation(job_id="1", tasks=8, cpus_per_node=(2, 2, 2, 2), mem_per_node=3000)


def recorded(name: str) -> dict[str, str]:
    """The SLURM_* variables of a batch script, as ``env`` printed them (see the README)."""
    lines = (DATA / f"{name}.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line)


def spec(resources: Resources | None = None, environment: Environment | None = None) -> ArraySpec:
    resources, environment = resources or Resources(), environment or Environment()
    return ArraySpec(
        batch_dir="/w/b", sub=0, elements=4, resources=resources, job_name="fit",
        python="python3", chdir="/w", environment=environment,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "counts"),
    [("2(x4)", (2, 2, 2, 2)), ("3,2(x2)", (3, 2, 2)), ("1", (1,)), ("4,1", (4, 1)), (" 2(x2) ", (2, 2))],
)
def test_compressed_counts_expand_to_one_per_node(text: str, counts: tuple[int, ...]) -> None:
    assert parse_counts(text) == counts


@pytest.mark.parametrize("text", ["", "2(x)", "x2", "2(x4", "-1", "2,,3"])
def test_malformed_counts_name_the_variable(text: str) -> None:
    with pytest.raises(ConfigError, match="SLURM_TASKS_PER_NODE"):
        parse_counts(text)


def test_memory_per_node_is_shared_among_the_cpus_of_a_node() -> None:
    found = parse_allocation(recorded("n4_n8_mem3000"))
    assert found == Allocation(job_id="23863", tasks=8, cpus_per_node=(2, 2, 2, 2), mem_per_node=3000)
    assert found.cpus == 8 and found.step_memory(1) == 1500 and found.step_memory(2) == 3000
    assert found.fits(1, 1500) == 8 and found.fits(2, 3000) == 4
    assert found.fits(1, 2000) == 4  # one per node: memory, not CPUs, is what runs out
    assert found.fits(3, None) == 0  # no node has three CPUs


def test_memory_per_cpu_gives_each_cpu_its_share() -> None:
    found = parse_allocation(recorded("n4_n8_mempercpu700"))
    assert found is not None and (found.tasks, found.cpus) == (8, 8)
    assert (found.mem_per_node, found.mem_per_cpu) == (None, 700)
    assert found.step_memory(1) == 700 and found.step_memory(3) == 2100
    assert found.fits(1, 700) == 8 and found.fits(1, 1400) == 4


def test_an_overcommitted_allocation_runs_as_many_steps_as_it_has_cpus() -> None:
    found = parse_allocation(recorded("n3_n7_overcommit"))  # SLURM_TASKS_PER_NODE=3,2(x2)
    assert found is not None and found.tasks == 7 and found.cpus_per_node == (1, 1, 1)
    assert found.cpus == 3 and found.step_memory(1) == 2000 and found.fits(1, 2000) == 3


def test_cpus_per_task_is_the_default_step() -> None:
    found = parse_allocation(recorded("n2_n2_c2"))
    assert found is not None
    assert (found.tasks, found.cpus_per_task, found.cpus) == (2, 2, 4)
    assert found.step_cpus(Resources()) == 2 and found.step_cpus(Resources(cpus=1)) == 1
    assert found.step_memory(2) == 2000 and found.fits(2, 2000) == 2 and found.fits(1, 1000) == 4


def test_an_allocation_without_task_counts_or_memory_still_reads() -> None:
    found = parse_allocation(recorded("n2_nomem"))  # sbatch -N2: one task per node, the default memory
    assert found == Allocation(job_id="23867", tasks=2, cpus_per_node=(1, 1), mem_per_cpu=500)
    bare = parse_allocation({"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS": "3"})
    assert bare == Allocation(job_id="7", tasks=3, cpus_per_node=(2, 2))
    assert bare.cpus == 3 and bare.step_memory(1) is None and bare.fits(1, None) == 3
    assert parse_allocation({"SLURM_JOB_ID": "7"}) == Allocation("7", 1, (1,))
    with_tasks = {"SLURM_JOB_ID": "7", "SLURM_TASKS_PER_NODE": "3,2(x2)", "SLURM_CPUS_PER_TASK": "2"}
    assert parse_allocation(with_tasks) == Allocation("7", 7, (6, 4, 4), cpus_per_task=2)


def test_outside_an_allocation_there_is_none() -> None:
    assert parse_allocation({"SLURM_NTASKS": "8", "PATH": "/bin"}) is None
    with pytest.raises(ConfigError, match="SLURM_NTASKS"):
        parse_allocation({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "eight"})


def test_the_step_asks_for_its_cpus_its_memory_share_and_exactly_that() -> None:
    argv = step_argv(N4_N8, spec(), ["/bin/bash", "/w/b/subs/0.sh"])
    assert argv == [
        "srun", "--ntasks=1", "--nodes=1", "--cpus-per-task=1", "--mem=1500", "--exact",
        "--job-name=fit", "/bin/bash", "/w/b/subs/0.sh",
    ]  # fmt: skip


def test_the_resources_cpus_memory_gpus_and_srun_options_go_on_the_step() -> None:
    resources = Resources.from_options(cpus=2, memory="2G", gpus="a100:1")
    environment = Environment.from_options(srun={"cpu-bind": "cores", "overcommit": True})
    argv = step_argv(N4_N8, spec(resources, environment), ["cmd"], srun="/usr/bin/srun")
    assert argv == [
        "/usr/bin/srun", "--ntasks=1", "--nodes=1", "--cpus-per-task=2", "--mem=2048", "--exact",
        "--gpus=a100:1", "--job-name=fit", "--cpu-bind=cores", "--overcommit", "cmd",
    ]  # fmt: skip


def test_with_no_memory_known_the_step_names_none() -> None:
    bare = Allocation(job_id="7", tasks=4, cpus_per_node=(4,))
    assert step_argv(bare, spec(Resources(cpus=3)), ["cmd"])[:5] == [
        "srun", "--ntasks=1", "--nodes=1", "--cpus-per-task=3", "--exact",
    ]  # fmt: skip


@pytest.fixture
def srun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in srun first on PATH: it notes its arguments, drops its options, and runs the
    rest (exec, so that signals reach the command as srun would forward them)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    fake = folder / "srun"
    fake.write_text(
        '#!/bin/bash\necho "$*" >> "$(dirname "$0")/argv"\nwhile [[ $1 == --* ]]; do shift; done\nexec "$@"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    return fake


@pytest.fixture
def allocation(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process runs in the recorded allocation of sbatch -N4 -n8 --mem=3000."""
    for name, value in recorded("n4_n8_mem3000").items():
        monkeypatch.setenv(name, value)


def test_outside_an_allocation_the_backend_refuses_to_be_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(ConfigError, match="sbatch or salloc.*backend='slurm'"):
        get_backend("steps")
    with pytest.raises(CorralError, match="sbatch or salloc"):
        corral.Executor(backend="steps")


@pytest.mark.usefixtures("allocation")
def test_without_srun_the_backend_refuses_to_be_made(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="srun"):
        get_backend("steps")


@pytest.mark.usefixtures("allocation", "srun")
def test_slots_are_the_allocation_tasks_unless_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = get_backend("steps")
    assert isinstance(backend, StepsBackend) and backend.slots == 8
    assert backend.limits(Resources()).slots == 8 and backend.limits(Resources(cpus=2)).slots == 4
    assert backend.limits(Resources(memory=2000)).slots == 4  # one such step per node
    monkeypatch.setenv("CORRAL_SLOTS", "3")
    assert get_backend("steps").limits(Resources()).slots == 3
    assert StepsBackend(slots=5).slots == 5


@pytest.mark.usefixtures("allocation", "srun")
def test_a_step_of_several_tasks_or_nodes_is_refused() -> None:
    backend = get_backend("steps")
    for resources in (Resources(tasks=2), Resources(nodes=2)):
        with pytest.raises(ResourceError, match="one task on one node"):
            backend.limits(resources)
    with pytest.raises(ResourceError, match="fits on no node"):
        backend.limits(Resources(cpus=3))
    with pytest.raises(ResourceError, match="per_task"):
        backend.ranks(Environment(per_task=True), Resources(), "python3")


@pytest.mark.usefixtures("allocation", "srun")
def test_the_preview_shows_the_srun_words() -> None:
    backend = get_backend("steps")
    script = backend.render(spec(Resources(time=timedelta(minutes=5))))
    assert "# each element runs as: srun --ntasks=1 --nodes=1 --cpus-per-task=1 --mem=1500 --exact" in script
    assert "job steps of allocation 23863" in script and "time limit 0:05:00, enforced by corral" in script
    argv = backend.submit_argv(spec(), "/w/b/subs/0.sh", ("o", "e"))
    assert argv[0].endswith("/srun") and argv[-2:] == ["/bin/bash", "/w/b/subs/0.sh"] and "--exact" in argv


class _Answers(LocalTransport):
    """A transport on which only the commands in ``answers`` exist."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers

    def run(self, argv: Sequence[str], *, timeout: float) -> CommandResult:
        if argv[0] not in self.answers:
            raise FileNotFoundError(argv[0])
        return CommandResult(tuple(argv), 0, self.answers[argv[0]], "")


@pytest.mark.usefixtures("allocation", "srun")
def test_auto_never_chooses_steps_even_inside_an_allocation() -> None:
    up = _Answers({"scontrol": "Slurmctld(primary) at head is UP\n"})
    assert resolve_name("auto", up) == "slurm"
    assert resolve_name("auto", _Answers({})) == "local"
    assert resolve_name("steps") == "steps"


def slow_square(x: int) -> int:
    time.sleep(0.2)
    print(f"squaring {x}")
    return x * x


def raises(x: int) -> int:
    raise KeyError(x)


@pytest.fixture
def executor(allocation: None, srun: Path, workdir: str) -> Iterator[corral.Executor]:
    with corral.Executor(backend="steps", directory=workdir) as made:
        yield made


def sleeps(seconds: float) -> None:
    time.sleep(seconds)


def test_calls_run_through_srun_and_come_back(executor: corral.Executor, srun: Path) -> None:
    assert list(executor.map(slow_square, range(6))) == [x * x for x in range(6)]
    words = "--ntasks=1 --nodes=1 --cpus-per-task=1 --mem=1500 --exact --job-name="
    seen = (srun.parent / "argv").read_text().splitlines()
    assert seen and all(line.startswith(words) for line in seen), seen
    future = executor.submit(slow_square, 7)
    assert future.result(timeout=60) == 49 and "squaring 7" in future.stdout()
    with pytest.raises(KeyError):
        executor.submit(raises, 3).result(timeout=60)


def test_cancel_ends_the_srun_of_a_running_element(executor: corral.Executor) -> None:
    future = executor.submit(sleeps, 60)
    deadline = time.monotonic() + 30
    while future.state is not JobState.RUNNING:
        assert time.monotonic() < deadline, "the call never ran"
        time.sleep(0.05)
    started = time.monotonic()
    executor.cancel_all()
    with pytest.raises(corral.JobCancelledError):
        future.result(timeout=30)
    assert time.monotonic() - started < 10


def test_srun_exit_codes_of_signalled_tasks_read_as_the_signal() -> None:
    killed = signalled(ElementStatus("L1_0", JobState.FAILED, "localhost", exit_code=137))
    assert (killed.exit_code, killed.signal) == (None, 9)
    for code in (3, 99, 128, 160):
        plain = ElementStatus("L1_0", JobState.FAILED, "localhost", exit_code=code)
        assert signalled(plain) == plain
