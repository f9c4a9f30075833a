"""The pure SGE translators, on output recorded from the real SGE 8.1.9 test cell
(tests/data/sge/README.md says which command produced each file) and on golden scripts."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from corral import JobState, Resources
from corral.backends.base import ArraySpec
from corral.backends.sge import SgeBackend
from corral.backends.sge_text import (
    DELETING,
    config_int,
    directive_prefix,
    done_or_gone,
    expand_tasks,
    job_name,
    memory_bytes,
    parse_cluster_queues,
    parse_config,
    parse_qacct,
    parse_qstat,
    parse_qsub,
    qacct_status,
    qstat_state,
    qsub_options,
    render_script,
    requests,
    task_ranges,
    transient,
)
from corral.errors import ResourceError, SchedulerError
from corral.job import Condition, Dependency
from corral.transports.local import LocalTransport

from .fakes import stand_in_python

DATA = Path(__file__).resolve().parents[1] / "data"


def recorded(name: str) -> str:
    path = DATA / "sge" / name
    return path.read_text() if path.exists() else ""


def output(name: str) -> tuple[int, str]:
    """A recorded command's return code and its stdout and stderr together."""
    rc = recorded(f"{name}.rc").strip()
    return int(rc or 0), recorded(f"{name}.txt") + recorded(f"{name}.stderr")


def states(name: str, cancelled: bool = False) -> dict[str, JobState]:
    return {r.element_id: qacct_status(r, cancelled).state for r in parse_qacct(recorded(name))}


# -- qsub ---------------------------------------------------------------------------------------


def test_qsub_terse_prints_the_job_id_with_or_without_the_task_range() -> None:
    assert parse_qsub(recorded("qsub_terse_array.txt")) == "3"
    assert parse_qsub(recorded("qsub_terse_single.txt")) == "4"
    with pytest.raises(SchedulerError, match="no job id"):
        parse_qsub(recorded("qsub_bad_queue.txt"))


# -- qstat --------------------------------------------------------------------------------------


def test_qstat_expands_a_throttled_pending_range_into_0_based_elements() -> None:
    live, ended = parse_qstat(recorded("qstat_throttled.txt"))
    found = {s.element_id: s for s in live}
    assert [found[f"3_{i}"].state for i in range(6)] == [JobState.RUNNING] * 2 + [JobState.PENDING] * 4
    assert found["3_0"].node == "vm" and found["3_2"].node is None
    assert found["4_0"].state is JobState.RUNNING  # not an array: no <tasks>, element 0
    assert ended == []


def test_qstat_after_widening_shows_the_third_task_running() -> None:
    found = {s.element_id: s.state for s in parse_qstat(recorded("qstat_widened.txt"))[0]}
    assert found["3_2"] is JobState.RUNNING and found["3_3"] is JobState.PENDING


def test_qstat_all_states_error_held_and_zombies() -> None:
    live, ended = parse_qstat(recorded("qstat_all_states.txt"))
    found = {s.element_id: s for s in live}
    assert found["17_0"].state is JobState.FAILED and "qstat -j 17" in found["17_0"].reason
    assert found["16_4"].state is JobState.PENDING and found["16_4"].reason == "held"
    assert {found["18_2"].state, found["18_4"].state} == {JobState.RUNNING, JobState.PENDING}
    assert found["18_4"].reason == ""
    assert ended == ["18_0", "18_1"]  # ended tasks of a job that is still running


def test_qstat_a_running_task_being_deleted_is_running_until_it_goes() -> None:
    live, _ = parse_qstat(recorded("qstat_deleting.txt"))
    assert {(s.element_id, s.state, s.reason) for s in live} == {
        ("9_0", JobState.RUNNING, DELETING),
        ("9_1", JobState.RUNNING, DELETING),
    }


def test_qstat_after_hold_and_pending_cancel() -> None:
    live, ended = parse_qstat(recorded("qstat_after_hold_and_pending_cancel.txt"))
    assert [(s.element_id, s.state, s.reason) for s in live] == [("56_0", JobState.RUNNING, "")]
    assert {"56_1", "56_2", "56_3", "25_0"} <= set(ended)
    assert parse_qstat(recorded("qstat_empty.txt")) == ([], [])


@pytest.mark.parametrize(
    ("letters", "state"),
    [
        ("qw", JobState.PENDING), ("hqw", JobState.PENDING), ("r", JobState.RUNNING),
        ("hr", JobState.RUNNING), ("dr", JobState.RUNNING), ("t", JobState.RUNNING),
        ("Rr", JobState.RUNNING), ("Rq", JobState.REQUEUED), ("s", JobState.SUSPENDED),
        ("S", JobState.SUSPENDED), ("T", JobState.SUSPENDED), ("Eqw", JobState.FAILED),
        ("dqw", JobState.CANCELLED), ("?", JobState.LOST),
    ],
)  # fmt: skip
def test_qstat_state_letters(letters: str, state: JobState) -> None:
    assert qstat_state(letters) is state


@pytest.mark.parametrize(
    ("text", "tasks"),
    [("3-6:1", [3, 4, 5, 6]), ("1,2", [1, 2]), ("5", [5]), ("1-7:3,9", [1, 4, 7, 9]), ("", [1])],
)
def test_task_ranges_expand(text: str, tasks: list[int]) -> None:
    assert expand_tasks(text) == tasks


def test_task_ranges_collapse_for_qdel() -> None:
    assert task_ranges([9, 3, 4, 5, 4]) == ["3-5", "9"]
    assert task_ranges([2]) == ["2"]
    assert task_ranges([]) == []


# -- qacct --------------------------------------------------------------------------------------


def test_qacct_completed_records_one_per_task() -> None:
    records = parse_qacct(recorded("qacct_completed.txt"))
    assert [r.element_id for r in records] == [f"3_{i}" for i in range(6)]
    assert {(r.node, r.failed, r.exit_status, r.slots) for r in records} == {("vm", 0, 0, 1)}
    assert set(states("qacct_completed.txt").values()) == {JobState.COMPLETED}


def test_qacct_time_limit_is_timeout() -> None:
    (record, _) = parse_qacct(recorded("qacct_timeout.txt"))
    assert (record.failed, record.exit_status, record.category) == (37, 137, "-l h_rt=3")
    status = qacct_status(record)
    assert status.state is JobState.TIMEOUT and status.reason == "killed at its time limit, h_rt=3"
    assert states("qacct_timeout_vmem.txt") == {"45_0": JobState.TIMEOUT}  # h_vmem asked, not reached


def test_qacct_memory_limit_is_out_of_memory_counting_slots() -> None:
    (record,) = parse_qacct(recorded("qacct_vmem.txt"))
    assert record.max_vmem == pytest.approx(329.836 * 2**20)
    assert qacct_status(record).state is JobState.OUT_OF_MEMORY
    assert "330 MB, over its h_vmem of 200 MB" in qacct_status(record).reason
    (pe,) = parse_qacct(recorded("qacct_vmem_pe.txt"))
    assert (pe.slots, qacct_status(pe).state) == (2, JobState.OUT_OF_MEMORY)
    # a single process hits its address-space limit first: a MemoryError, the job just fails
    assert states("qacct_vmem_malloc.txt") == {"8_0": JobState.FAILED}


def test_qacct_exit_codes_and_signals() -> None:
    assert states("qacct_failed.txt") == {"6_0": JobState.FAILED, "6_1": JobState.FAILED}
    failed = qacct_status(parse_qacct(recorded("qacct_failed.txt"))[0])
    assert (failed.exit_code, failed.signal, failed.describe_end()) == (3, None, "exit code 3")
    (selfterm,) = parse_qacct(recorded("qacct_selfterm.txt"))
    assert (qacct_status(selfterm).signal, qacct_status(selfterm).exit_code) == (15, None)
    assert qacct_status(selfterm).describe_end() == "killed by signal 15 (SIGTERM)"
    assert states("qacct_selfkill.txt") == {"11_0": JobState.FAILED}
    assert states("qacct_exit137.txt") == {"13_0": JobState.FAILED}  # exit 137 is no signal
    (exit137,) = parse_qacct(recorded("qacct_exit137.txt"))
    assert (qacct_status(exit137).exit_code, qacct_status(exit137).signal) == (137, None)


def test_qacct_a_deleted_running_task_is_cancelled_only_when_we_deleted_it() -> None:
    # qacct has no mark of qdel: failed 100 + exit 137 is any SIGKILL
    assert set(states("qacct_cancelled.txt").values()) == {JobState.FAILED}
    assert set(states("qacct_cancelled.txt", cancelled=True).values()) == {JobState.CANCELLED}
    mixed = states("qacct_mixed.txt", cancelled=True)
    assert mixed == {
        "18_0": JobState.COMPLETED, "18_1": JobState.FAILED,
        "18_2": JobState.CANCELLED, "18_3": JobState.CANCELLED,
    }  # fmt: skip


def test_qacct_a_task_that_could_not_start_failed() -> None:
    (record, _) = parse_qacct(recorded("qacct_error_state.txt"))
    assert qacct_status(record).state is JobState.FAILED
    assert qacct_status(record).reason == "failed 26: opening input/output file"


def test_qacct_on_an_unknown_job() -> None:
    rc, text = output("qacct_unknown")
    assert rc == 1 and done_or_gone(rc, text)
    assert parse_qacct(recorded("qacct_unknown.txt")) == []


@pytest.mark.parametrize(
    ("text", "size"),
    [("329.836MB", 329.836 * 2**20), ("4.871KB", 4871 / 1000 * 1024), ("0.000B", 0), ("100M", 100 * 2**20),
     ("1g", 1e9), ("2G", 2 * 2**30), ("512", 512), ("INFINITY", 0)],
)  # fmt: skip
def test_memory_sizes(text: str, size: float) -> None:
    assert memory_bytes(text) == pytest.approx(size)


def test_requests_of_a_category() -> None:
    assert requests("-l h_rt=60,h_vmem=100M -pe smp 2") == {"h_rt": "60", "h_vmem": "100M"}
    assert requests("-q all.q -l h_rt=3") == {"h_rt": "3"}
    assert requests("NONE") == {}


# -- the other commands -------------------------------------------------------------------------


def test_global_config_and_queue_summary() -> None:
    config = parse_config(recorded("qconf_sconf.txt"))
    assert config_int(config, "max_aj_tasks") == 75000
    assert config_int(config, "max_u_jobs") is None  # 0: no limit
    assert config["reporting_params"].endswith("accounting_flush_time=00:00:00")
    assert parse_cluster_queues(recorded("qstat_g_c.txt")) == {"all.q": 4}
    assert parse_config(recorded("qconf_sq.txt"))["slots"] == "4"


@pytest.mark.parametrize(
    "name",
    ["qdel_mixed", "qdel_unknown", "qdel_running", "qdel_pending_range", "qdel_held_pending", "qdel_single",
     "qhold_mixed", "qalter_tc", "qalter_tc_unknown"],
)  # fmt: skip
def test_commands_on_ids_that_are_gone_count_as_done(name: str) -> None:
    assert done_or_gone(*output(name))


@pytest.mark.parametrize("name", ["qdel_qmaster_down", "qalter_qmaster_down", "qsub_bad_queue"])
def test_real_failures_are_not_done(name: str) -> None:
    rc, text = output(name)
    assert rc != 0 and not done_or_gone(rc, text)


@pytest.mark.parametrize("name", ["qstat", "qsub", "qdel", "qconf", "qalter"])
def test_qmaster_down_is_transient(name: str) -> None:
    assert transient(output(f"{name}_qmaster_down")[1])


@pytest.mark.parametrize("name", ["qsub_bad_queue", "qsub_bad_name", "qsub_bad_pe", "qdel_unknown"])
def test_refusals_are_not_transient(name: str) -> None:
    assert not transient(output(name)[1])


# -- qsub options and the script ----------------------------------------------------------------


def spec(python: str = "/opt/venv/bin/python", **resources: object) -> ArraySpec:
    return ArraySpec(
        batch_dir="/home/ana/my project/.corral/fit-20261121-140000-abcdef",
        sub=1,
        elements=8,
        resources=Resources.from_options(**resources),
        job_name="corral-fit",
        python=python,
        chdir="/home/ana/my project",
        max_running=3,
    )


@pytest.mark.parametrize(
    ("name", "valid"),
    [("corral-fit", "corral-fit"), ("1abc", "_1abc"), ("a/b:c@d*e?f\\g", "a_b_c_d_e_f_g"), ("", "corral")],
)
def test_job_names_are_made_valid(name: str, valid: str) -> None:
    assert job_name(name) == valid


def test_resources_become_qsub_options() -> None:
    options = qsub_options(spec(time=timedelta(seconds=90.2), memory="3G", cpus=2, partition="all.q"))
    assert options == [
        "-S /bin/bash", "-N corral-fit", "-t 1-8", "-V", "-tc 3", "-l h_rt=91", "-l h_vmem=1536M",
        "-pe smp 2", "-q all.q",
    ]  # fmt: skip
    assert "-pe mpi 2" in qsub_options(spec(cpus=2), parallel_env="mpi")


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"gpus": "2"}, "gpus='2' cannot be expressed on SGE"),
        ({"qos": "high"}, "SGE has no QOS"),
        ({"constraint": "avx512"}, "constraint='avx512'"),
        ({"nodes": 2}, "one host"),
        ({"tasks": 4}, "one host"),
        ({"extra": {"tc": "5"}}, "extra option 'tc'"),
        ({"extra": {"q": "other.q"}}, "extra option 'q'"),
    ],
)
def test_what_sge_cannot_express_is_a_resource_error(resources: dict[str, object], message: str) -> None:
    with pytest.raises(ResourceError, match=message):
        qsub_options(spec(**resources))


@pytest.mark.parametrize(
    ("name", "resources"),
    [
        ("minimal", {}),
        (
            "everything",
            {
                "time": "1-12:00:00", "cpus": 4, "memory": "16G", "nodes": 1, "tasks": 1,
                "partition": "gpu.q", "account": "proj-42", "job_name": "fit/run",
                "extra": {"l": "gpu=2", "notify": None},
            },
        ),
    ],
)  # fmt: skip
def test_script_matches_golden_file(name: str, resources: dict[str, object]) -> None:
    golden = DATA / "golden" / f"sge_{name}.sh"
    text = render_script(spec(**resources))
    if os.environ.get("CORRAL_REGOLD"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_the_script_sends_the_0_based_element_to_its_own_files(tmp_path: Path) -> None:
    """Run the rendered script with bash as an SGE task would, /bin/echo standing in for Python."""
    script = tmp_path / "job.sh"
    script.write_text(render_script(spec(python="/bin/echo")))
    own = tmp_path / "job-7_task3.err"  # SGE's own stream file, empty
    own.touch()
    pattern = str(tmp_path / "logs dir" / "job-{job}_{index}.{stream}")
    (tmp_path / "logs dir").mkdir()
    env = {"PATH": os.environ["PATH"], "SGE_TASK_ID": "3", "JOB_ID": "7", "SGE_STDOUT_PATH": str(own)}
    argv = ["bash", str(script), pattern.replace("{stream}", "out"), pattern.replace("{stream}", "err")]
    subprocess.run(argv, env=env, check=True, timeout=30)
    worker = (tmp_path / "logs dir" / "job-7_2.out").read_text()
    assert worker == f"-m corral.worker {spec().batch_dir} 1 2 7_2\n"
    assert (tmp_path / "logs dir" / "job-7_2.err").read_text() == ""
    assert not own.exists()


# -- dependencies and shell commands ----------------------------------------------------------


def test_a_dependency_holds_for_whole_jobs_each_named_once() -> None:
    waiting = replace(spec(), dependency=Dependency(Condition.ANY, ("42_1", "42_3", "43", "44_0", "42_7")))
    options = qsub_options(waiting)
    assert options[-1] == "-hold_jid 42,43,44"
    assert sum(o.startswith("-hold_jid") for o in options) == 1
    assert "#$ -hold_jid 42,43,44\n" in render_script(waiting)
    one = replace(spec(), dependency=Dependency(Condition.ANY, ("7_0",)))
    assert qsub_options(one)[-1] == "-hold_jid 7"


def test_no_dependency_no_hold() -> None:
    assert "hold_jid" not in render_script(spec())
    assert not any("hold" in option for option in qsub_options(spec(cpus=2)))


def test_with_a_command_the_exec_line_ends_with_the_here_document() -> None:
    command = 'echo $JOB_ID `hostname` "$HOME"\nCORRAL_COMMAND'
    text = render_script(replace(spec(), command=command))
    plain = render_script(spec())
    exec_line = next(line for line in plain.splitlines() if line.startswith("exec /opt"))
    assert text == plain.replace(
        exec_line, exec_line + " <<'CORRAL_COMMAND_'\n" + command + "\nCORRAL_COMMAND_"
    )


def test_the_sge_script_gives_the_command_to_the_worker_on_stdin(tmp_path: Path) -> None:
    """Run the rendered script as an SGE task would; the stand-in python prints its
    arguments and then its stdin to the element's own file."""
    python = stand_in_python(tmp_path)
    command = "echo $JOB_ID '$SGE_TASK_ID' \"`hostname`\" \\\\\nexit 3\nCORRAL_COMMAND_"
    script = tmp_path / "job.sh"
    script.write_text(render_script(replace(spec(python=str(python)), command=command)))
    pattern = str(tmp_path / "job-{job}_{index}.{stream}")
    env = {"PATH": os.environ["PATH"], "SGE_TASK_ID": "2", "JOB_ID": "8", "SGE_STDOUT_PATH": ""}
    argv = ["bash", str(script), pattern.replace("{stream}", "out"), pattern.replace("{stream}", "err")]
    subprocess.run(argv, env=env, check=True, timeout=30)
    out = (tmp_path / "job-8_1.out").read_text()
    assert out == f"-m corral.worker {spec().batch_dir} 1 1 8_1\n{command}\n"
    assert (tmp_path / "job-8_1.err").read_text() == ""


@pytest.mark.parametrize(
    "command",
    [
        "#$ -t 1-100\necho hi",  # an SGE script given as the command keeps its own directives
        "echo start\n#$ -l h_rt=1\n#$ -hold_jid 99",
        "#$Id: build.sh,v 1.2$\nmake",
    ],
)
def test_a_command_line_starting_with_hash_dollar_is_no_qsub_directive(command: str) -> None:
    """qsub reads every line of the script that starts with "#$" as options, the here-document
    included (Grid Engine's parse_script_file scans the whole file, unlike sbatch, which stops
    at the first command): the directives qsub sees must be corral's own, whatever the command."""
    waiting = replace(spec(), command=command)
    prefix = directive_prefix(waiting)
    assert prefix != "#$" and not any(line.startswith(prefix) for line in command.splitlines())
    directives = [line for line in render_script(waiting).splitlines() if line.startswith(prefix)]
    assert directives == [f"{prefix} {option}" for option in qsub_options(waiting)]
    argv = SgeBackend(LocalTransport()).submit_argv(waiting, "/w/subs/0.sh", ("o", "e"))
    assert argv[argv.index("-C") + 1] == prefix  # qsub reads only these lines as options
    assert "-C" not in SgeBackend(LocalTransport()).submit_argv(spec(), "/w/subs/0.sh", ("o", "e"))
