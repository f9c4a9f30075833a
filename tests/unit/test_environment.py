"""The job's environment (corral.environment): its checks, and the script lines every backend
shares (backends/script.py), run by real bash with a stand-in for the worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

import corral
from corral.backends import local, sge_text, slurm_text
from corral.backends.base import ArraySpec
from corral.environment import Environment
from corral.errors import ResourceError
from corral.resources import Resources


def spec(environment: Environment, python: str = "/usr/bin/python3", **resources: object) -> ArraySpec:
    return ArraySpec(
        batch_dir="/w/b", sub=0, elements=1, resources=Resources.from_options(**resources),
        job_name="corral-f", python=python, chdir="/w", environment=environment,
    )  # fmt: skip


# -- checks -------------------------------------------------------------------------------------


def test_the_friendly_forms_become_one_typed_value() -> None:
    env = Environment.from_options(
        setup="module load python/3.11\n\nsource ~/venv/bin/activate", env={"OMP_NUM_THREADS": 4},
        python="python3", post=["echo done"], srun={"cpu-bind": "cores", "exclusive": True, "x11": False},
        launcher="nice -n 5", per_task="all",
    )  # fmt: skip
    assert env.setup == ("module load python/3.11", "source ~/venv/bin/activate")
    assert env.env == (("OMP_NUM_THREADS", "4"),)
    assert env.srun == (("cpu-bind", "cores"), ("exclusive", None))
    assert env.launcher == ("nice", "-n", "5") and env.per_task == "all" and env.post == ("echo done",)
    assert Environment.from_options(srun=True).srun == () and Environment.from_options().is_default


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"setup": ["#SBATCH --mem=1T"]}, "scheduler directive"),
        ({"post": "  #$ -l h_rt=1"}, "scheduler directive"),
        ({"setup": ["echo \x1b[2J"]}, "control character"),
        ({"setup": 42}, "shell lines"),
        ({"env": {"1X": "a"}}, "not an environment variable name"),
        ({"env": {"CORRAL_IN_JOB": "x"}}, "corral's own variable"),
        ({"env": {"X": "a\0b"}}, "NUL"),
        ({"env": {"X": None}}, "text or a number"),
        ({"env": ["X=1"]}, "mapping"),
        ({"srun": {"ntasks": 4}}, "corral sets on the step"),
        ({"srun": {"nt": 4}}, "'ntasks'"),  # an abbreviation srun would take
        ({"srun": {"--cpu-bind": "x"}}, "malformed"),
        ({"srun": {"cpu-bind": "a b"}}, "cannot be passed"),
        ({"srun": "cpu-bind=cores"}, "mapping of srun options"),
        ({"launcher": "nsys 'profile"}, "cannot be split"),
        ({"launcher": ["ok", ""]}, "not a word"),
        ({"python": ""}, "interpreter"),
        ({"python": "py\nthon"}, "control character"),
        ({"per_task": 1}, "per_task"),
        ({"per_task": "rank0"}, "per_task"),
        ({"shell": "zsh"}, "unknown environment option"),
    ],
)
def test_bad_values_are_refused_before_anything_is_written(options: dict[str, object], message: str) -> None:
    with pytest.raises(ResourceError, match=message):
        Environment.from_options(**options)


def test_a_higher_layer_replaces_fields_but_merges_variables() -> None:
    low = Environment.from_options(setup=["a"], env={"X": "1", "Y": "2"}, python="p1")
    high = Environment.from_options(setup=["b"], env={"Y": "3"})
    merged = low.merged(high)
    assert merged.setup == ("b",) and merged.python == "p1" and merged.env_map == {"X": "1", "Y": "3"}


def test_sge_refuses_what_needs_srun() -> None:
    for options in ({"srun": True}, {"per_task": True}):
        with pytest.raises(ResourceError, match="srun"):
            sge_text.render_script(spec(Environment.from_options(**options)))


# -- the script, run by bash --------------------------------------------------------------------

WORKER = """#!{python}
# stands in for the interpreter: records what it saw, as the worker would
import os, signal, sys, time
out = {out!r}
def say(text):
    with open(out, "a") as f:
        f.write(text + "\\n")
signal.signal(signal.SIGUSR1, lambda *_: say("warned"))  # as the worker catches it
say("args=" + " ".join(sys.argv[1:]))
for name in ("GREETING", "FROM_SETUP", "LAUNCHED"):
    say(name + "=" + os.environ.get(name, ""))
if os.environ.get("WAIT"):
    for _ in range(200):
        if os.path.exists(out + ".go"):
            break
        time.sleep(0.05)
if os.environ.get("DIE"):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
sys.exit(int(os.environ.get("EXIT", "0")))
"""


def fake_worker(tmp_path: Path) -> tuple[Path, Path]:
    out, fake = tmp_path / "seen", tmp_path / "python"
    fake.write_text(WORKER.format(python=sys.executable, out=str(out)))
    fake.chmod(0o755)
    return fake, out


def run_local_script(tmp_path: Path, environment: Environment, **env: str) -> tuple[int, str]:
    """The local backend's script with the stand-in as the interpreter: exit code, what it saw."""
    fake, out = fake_worker(tmp_path)
    backend = local.LocalBackend()
    script = tmp_path / "job.sh"
    script.write_text(backend.render(spec(environment, python=str(fake), time="10:00")))
    full = {**os.environ, "CORRAL_ARRAY_TASK_ID": "3", "CORRAL_ELEMENT_ID": "L1_3", **env}
    proc = subprocess.run(["bash", str(script)], env=full, capture_output=True, text=True, timeout=60)
    return proc.returncode, out.read_text() + proc.stdout


def test_setup_env_launcher_and_post_run_around_the_worker_in_order(tmp_path: Path) -> None:
    environment = Environment.from_options(
        setup=["export FROM_SETUP=yes", "echo setup-ran"], env={"GREETING": "hi $USER `id` 'q'"},
        launcher=["env", "LAUNCHED=1"], post=["echo post-ran; echo status-was-kept"],
    )  # fmt: skip
    code, seen = run_local_script(tmp_path, environment, EXIT="3")
    assert code == 3  # the worker's status, after the post lines
    assert "args=-m corral.worker /w/b 0 3 L1_3" in seen
    assert "GREETING=hi $USER `id` 'q'" in seen  # literally: no expansion
    assert "FROM_SETUP=yes" in seen and "LAUNCHED=1" in seen
    assert seen.index("args=") < seen.index("post-ran")


def test_a_worker_a_signal_ended_ends_the_job_by_that_signal_after_the_post_lines(tmp_path: Path) -> None:
    """As without post lines: SLURM requeues a preempted job that SIGTERM ended, and fails one
    that exited 143."""
    code, seen = run_local_script(tmp_path, Environment.from_options(post=["echo post-ran"]), DIE="1")
    assert code == -signal.SIGTERM and "post-ran" in seen


def test_without_post_the_worker_replaces_the_shell(tmp_path: Path) -> None:
    script = local.LocalBackend().render(spec(Environment.from_options(env={"A": "1"})))
    assert script.splitlines()[-1].startswith("exec ")


def test_with_post_the_time_limit_warning_still_reaches_the_worker(tmp_path: Path) -> None:
    fake, out = fake_worker(tmp_path)
    script = tmp_path / "job.sh"
    environment = Environment.from_options(post=["echo post-ran"])
    script.write_text(local.LocalBackend().render(spec(environment, python=str(fake), time="10:00")))
    full = {**os.environ, "CORRAL_ARRAY_TASK_ID": "0", "CORRAL_ELEMENT_ID": "L1_0", "WAIT": "1"}
    proc = subprocess.Popen(
        ["bash", str(script)], env=full, stdout=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGUSR1, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not (out.exists() and "args=" in out.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # the shell sets its trap right after starting the worker
    proc.send_signal(signal.SIGUSR1)  # as SLURM's --signal=B:USR1 does: the batch shell alone
    time.sleep(0.3)
    (tmp_path / "seen.go").touch()
    stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "warned" in out.read_text() and "post-ran" in stdout


def test_slurm_runs_the_worker_as_a_step_with_the_srun_options() -> None:
    environment = Environment.from_options(srun={"cpu-bind": "cores"}, launcher="nice")
    script = slurm_text.render_script(spec(environment, cpus=4))
    last = script.splitlines()[-1]
    step = "exec srun --ntasks=1 --nodes=1 --cpus-per-task=4 --cpu-bind=cores"
    assert last.startswith(f"{step} nice /usr/bin/python3 -m corral.worker")


def test_per_task_leaves_the_worker_out_of_srun() -> None:
    environment = Environment.from_options(srun={"cpu-bind": "cores"}, per_task=True)
    script = slurm_text.render_script(spec(environment, nodes=2, tasks=4))
    assert "exec /usr/bin/python3 -m corral.worker" in script and "srun" not in script


def test_slurm_and_sge_scripts_keep_the_environment_lines_after_the_directives() -> None:
    environment = Environment.from_options(setup=["module load x"], env={"A": "b c"}, post=["true"])
    for script in (
        slurm_text.render_script(spec(environment, time=timedelta(minutes=5))),
        sge_text.render_script(spec(environment)),
    ):
        lines = script.splitlines()
        first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
        assert lines.index("module load x") >= first_command
        assert "export A='b c'" in lines and lines[-1] == "exit $corral_status"
        assert lines.index("true") < lines.index("exit $corral_status")  # the post line


# -- through the front-ends, on the local backend -------------------------------------------------


def seen() -> tuple[str | None, str | None, str | None]:
    return os.environ.get("STAGE"), os.environ.get("FROM_SETUP"), os.environ.get("LAUNCHED")


def rank_and_size(fail_on: int = -1, exit_on: int = -1) -> tuple[int, int]:
    info = corral.task_info()
    if info.rank == fail_on:
        raise ValueError(f"rank {info.rank} is unhappy")
    if info.rank == exit_on:
        os._exit(3)
    return info.rank, info.size


def test_the_executor_pool_and_task_carry_the_environment_to_their_jobs(tmp_path: Path) -> None:
    options: dict[str, object] = {
        "setup": ["export FROM_SETUP=yes"], "env": {"STAGE": "test"}, "launcher": ["env", "LAUNCHED=1"],
        "post": [f"touch {tmp_path / 'post-ran'}"],
    }  # fmt: skip
    with corral.Executor("local", directory=str(tmp_path / "w"), **options) as ex:
        assert ex.submit(seen).result(timeout=60) == ("test", "yes", "1")
        assert "export STAGE=test" in ex.preview().script
    deadline = time.monotonic() + 30  # the post lines run once the element's worker has ended
    while not (tmp_path / "post-ran").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmp_path / "post-ran").exists()
    with corral.Pool(2, backend="local", directory=str(tmp_path / "p"), env={"STAGE": "pool"}) as pool:
        assert pool.apply(seen) == ("pool", None, None)
    task = corral.task(backend="local", directory=str(tmp_path / "t"), env={"STAGE": "task"})(seen)
    assert task.distribute().result(timeout=60) == ("task", None, None)


def test_per_task_runs_each_call_on_every_task_with_its_rank(tmp_path: Path) -> None:
    with corral.Executor("local", directory=str(tmp_path / "w"), tasks=3, per_task="all") as ex:
        assert ex.submit(rank_and_size).result(timeout=60) == [(0, 3), (1, 3), (2, 3)]
    with corral.Executor("local", directory=str(tmp_path / "w"), tasks=2, per_task=True) as ex:
        assert ex.submit(rank_and_size).result(timeout=60) == (0, 2)  # rank 0's value
    assert corral.task_info() == corral.TaskInfo(0, 1, 0, os.uname().nodename)  # outside: rank 0 of 1


def test_a_rank_that_raises_or_dies_fails_the_call_and_says_which(tmp_path: Path) -> None:
    with corral.Executor("local", directory=str(tmp_path / "w"), tasks=3, per_task=True) as ex:
        raised = ex.submit(rank_and_size, fail_on=1)
        died = ex.submit(rank_and_size, exit_on=2)
        with pytest.raises(ValueError, match="rank 1 is unhappy") as caught:
            raised.result(timeout=60)
        assert "rank 1 of 3" in str(caught.value.__cause__)
        with pytest.raises(RuntimeError, match="rank 2 of 3 wrote no result"):
            died.result(timeout=60)


def test_per_task_and_srun_are_refused_on_grid_engine_before_anything_is_written(tmp_path: Path) -> None:
    from corral.backends.sge import SgeBackend

    engine = corral.Cluster(SgeBackend(local.LocalTransport()), str(tmp_path / "w"))
    with pytest.raises(ResourceError, match="srun"):
        corral.Executor(cluster=engine, per_task=True).submit(seen).result(timeout=10)
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())


def test_an_interpreter_under_home_is_the_nodes_home(tmp_path: Path) -> None:
    """python="~/venv/bin/python", as a host's config writes it: bash expands the ~ on the
    node, and the rest stays quoted."""
    fake, out = fake_worker(tmp_path)
    (tmp_path / "my venv").mkdir()
    fake.rename(tmp_path / "my venv" / "python")
    script = tmp_path / "job.sh"
    script.write_text(local.LocalBackend().render(spec(Environment(), python="~/my venv/python")))
    assert "exec ~/'my venv/python' -m corral.worker" in script.read_text()
    full = {**os.environ, "HOME": str(tmp_path), "CORRAL_ARRAY_TASK_ID": "0", "CORRAL_ELEMENT_ID": "L1_0"}
    subprocess.run(["bash", str(script)], env=full, check=True, timeout=60)
    assert "args=-m corral.worker" in out.read_text()


def test_the_agents_interpreter_under_home_is_left_to_the_remote_shell() -> None:
    from corral.transports.ssh import remote_line

    assert remote_line(["~/my env/bin/python", "-m", "x y"]) == "~/'my env/bin/python' -m 'x y'"
    assert remote_line(["/opt/py", "-m", "x"]) == "/opt/py -m x"
    assert remote_line(["~user/py"]) == "'~user/py'"  # only the user's own home
