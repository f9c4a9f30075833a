"""The pure SLURM translators, on output recorded from the real SLURM 22.05 test cluster
(tests/data/slurm/README.md says which command produced each file) and on golden scripts."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from corral import JobState, Resources
from corral.backends.base import ArraySpec
from corral.backends.slurm_text import (
    DEPENDENCY_TYPES,
    SLURM_STATES,
    expand_array_id,
    format_time,
    parse_config,
    parse_exit_code,
    parse_max_submit,
    parse_sacct,
    parse_sbatch,
    parse_sinfo_cpus,
    parse_squeue,
    render_script,
    sbatch_options,
    slurm_state,
    squeue_says_unknown,
    submission_unknown,
    transient_failure,
    with_exit_code,
)
from corral.errors import SchedulerError
from corral.job import Condition, Dependency

from .fakes import stand_in_python

DATA = Path(__file__).resolve().parents[1] / "data"


def recorded(name: str) -> str:
    return (DATA / "slurm" / name).read_text()


def test_sbatch_parsable() -> None:
    assert parse_sbatch(recorded("sbatch_parsable.txt")) == "85"
    assert parse_sbatch("4242;other-cluster\n") == "4242"
    with pytest.raises(SchedulerError, match="no job id"):
        parse_sbatch("")


def test_squeue_running_and_pending_elements_one_per_line() -> None:
    statuses = {s.element_id: s for s in parse_squeue(recorded("squeue_array.txt"))}
    assert statuses["84_0"].state is JobState.RUNNING and statuses["84_0"].node == "n1"
    assert statuses["84_8"].state is JobState.PENDING and statuses["84_8"].reason == "Resources"
    assert statuses["84_8"].node is None
    assert statuses["85_3"].reason == "Priority"


def test_squeue_with_all_states_shows_ended_elements() -> None:
    states = {s.element_id: s.state for s in parse_squeue(recorded("squeue_all_states.txt"))}
    assert states == {"199_0": JobState.COMPLETED, "199_1": JobState.FAILED, "199_2": JobState.RUNNING}


def test_squeue_without_r_collapses_pending_ranges_which_we_expand() -> None:
    ids = [s.element_id for s in parse_squeue(recorded("squeue_array_no_r.txt"))]
    assert ids[:8] == ["84_8", "84_9", "84_10", "84_11", "85_0", "85_1", "85_2", "85_3"]


def test_squeue_on_unknown_ids() -> None:
    rc = int(recorded("squeue_invalid.rc"))
    assert squeue_says_unknown(rc, recorded("squeue_invalid.stderr"))
    assert not squeue_says_unknown(0, "")
    assert not squeue_says_unknown(1, "slurm_load_jobs error: Unable to contact slurm controller")
    assert {s.element_id for s in parse_squeue(recorded("squeue_mixed_invalid.txt"))} >= {"84_0", "84_11"}


def test_sacct_final_states_exit_codes_and_pending_ranges() -> None:
    statuses = {s.element_id: s for s in parse_sacct(recorded("sacct_array.txt"))}
    assert statuses["74_0"].state is JobState.TIMEOUT
    assert statuses["75_1"].state is JobState.FAILED and statuses["75_1"].exit_code == 3
    assert statuses["75_1"].signal is None and statuses["75_1"].describe_end() == "exit code 3"
    assert statuses["76_2"].state is JobState.CANCELLED and statuses["76_2"].node == "n4"
    assert [statuses[f"77_{i}"].state for i in range(6)] == [JobState.PENDING] * 6
    assert statuses["77_0"].node is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3:0", (3, None)), ("0:9", (None, 9)), ("0:0", (0, None)), ("", (None, None)), ("x:y", (None, None))],
)
def test_sacct_exit_code_is_an_exit_code_or_a_signal(text: str, expected: tuple[object, object]) -> None:
    assert parse_exit_code(text) == expected


def test_an_element_squeue_shows_failed_takes_its_exit_code_from_sacct() -> None:
    lines = "75_1|FAILED|n2|NonZeroExitCode\n75_0|RUNNING|n2|None\n"
    squeued = {s.element_id: s for s in parse_squeue(lines)}
    accounted = {s.element_id: s for s in parse_sacct(recorded("sacct_array.txt"))}
    assert squeued["75_1"].exit_unknown and not squeued["75_0"].exit_unknown
    failed = with_exit_code(squeued["75_1"], accounted["75_1"])
    assert (failed.state, failed.exit_code, failed.reason, failed.node) == (JobState.FAILED, 3, "", "n2")
    assert with_exit_code(squeued["75_0"], accounted["75_0"]) == squeued["75_0"]  # not failed: as is
    assert with_exit_code(squeued["75_1"], None) == squeued["75_1"]  # sacct does not know it yet
    assert not failed.exit_unknown


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("123", ["123"]),
        ("123_4", ["123_4"]),
        ("123_[0-2,7%4]", ["123_0", "123_1", "123_2", "123_7"]),
        ("123_[1-7:3]", ["123_1", "123_4", "123_7"]),
    ],
)
def test_array_ids(text: str, ids: list[str]) -> None:
    assert expand_array_id(text) == ids


def test_every_documented_state_is_in_the_table_and_unknown_is_lost() -> None:
    documented = "PENDING RUNNING COMPLETED CANCELLED FAILED TIMEOUT NODE_FAIL PREEMPTED BOOT_FAIL DEADLINE"
    for name in (documented + " OUT_OF_MEMORY REQUEUED SUSPENDED COMPLETING").split():
        assert name in SLURM_STATES
    assert slurm_state("CANCELLED by 0") is JobState.CANCELLED
    assert slurm_state("SOMETHING_NEW") is JobState.LOST
    assert not JobState.REQUEUED.is_final and JobState.PREEMPTED.is_final


def test_config_sinfo_and_sacctmgr() -> None:
    config = parse_config(recorded("scontrol_show_config.txt"))
    assert config["MaxArraySize"] == "1001"
    assert config["ClusterName"] == "corral-test"
    assert parse_sinfo_cpus(recorded("sinfo_cpus.txt")) == (8, 0, 0, 8)
    assert parse_sinfo_cpus("3/5/0/8\n1/1/2/4\n") == (4, 6, 2, 12)
    # two partitions over the same 8 CPUs: the default one's, or the one asked for
    both = recorded("sinfo_partitions_cpus.txt")
    assert parse_sinfo_cpus(both) == (0, 8, 0, 8)
    assert parse_sinfo_cpus("debug*|3/5/0/8\nurgent|1/1/2/4\n", "urgent") == (1, 1, 2, 4)
    assert parse_sinfo_cpus("a|3/5/0/8\nb|1/1/2/4\n") == (3, 5, 0, 8)  # none marked: the first
    assert parse_sinfo_cpus("a|3/5/0/8\n", "missing") == (0, 0, 0, 0)
    assert parse_max_submit(recorded("sacctmgr_assoc.txt")) is None
    assert parse_max_submit(recorded("sacctmgr_assoc_limit.txt")) == 50


def test_time_format() -> None:
    assert format_time(timedelta(minutes=90)) == "0-01:30:00"
    assert format_time(timedelta(days=2, seconds=1.2)) == "2-00:00:02"


def spec(**resources: object) -> ArraySpec:
    return ArraySpec(
        batch_dir="/home/ana/my project/.corral/fit-20261121-140000-abcdef",
        sub=1,
        elements=8,
        resources=Resources.from_options(**resources),
        job_name="corral-fit",
        python="/opt/venv/bin/python",
        chdir="/home/ana/my project",
        max_running=3,
    )


@pytest.mark.parametrize(
    ("name", "resources"),
    [
        ("minimal", {}),
        (
            "everything",
            {
                "time": "1-12:00:00", "cpus": 4, "memory": "16G", "gpus": "a100:2", "nodes": 1, "tasks": 2,
                "partition": "gpu", "account": "proj-42", "qos": "high", "constraint": "avx512&ib",
                "job_name": "fit-run", "extra": {"mail-type": "END,FAIL", "exclusive": None},
            },
        ),
    ],
)  # fmt: skip
def test_script_matches_golden_file(name: str, resources: dict[str, object]) -> None:
    golden = DATA / "golden" / f"slurm_{name}.sh"
    text = render_script(spec(**resources))
    if os.environ.get("CORRAL_REGOLD"):
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.parametrize(
    "name", ["squeue_ctld_down", "sbatch_ctld_down", "scancel_ctld_down", "scontrol_update_ctld_down",
             "sinfo_ctld_down", "sacct_dbd_down"],
)  # fmt: skip
def test_an_unreachable_controller_is_transient(name: str) -> None:
    stderr = (DATA / "slurm" / f"{name}.stderr").read_text()
    assert transient_failure(stderr)
    assert not submission_unknown(stderr)  # a refused connection submitted nothing


@pytest.mark.parametrize(
    "name", ["sbatch_bad_partition", "sbatch_bad_option", "squeue_invalid", "scancel_invalid_verbose"]
)
def test_a_refusal_is_not_transient(name: str) -> None:
    assert not transient_failure((DATA / "slurm" / f"{name}.stderr").read_text())


def test_a_lost_sbatch_answer_may_have_submitted() -> None:
    assert submission_unknown(
        "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"
    )


# -- dependencies and shell commands ----------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "kind"),
    [(Condition.OK, "afterok"), (Condition.ANY, "afterany"), (Condition.NOTOK, "afternotok")],
)
def test_a_dependency_becomes_dependency_and_kill_on_invalid_dep(condition: Condition, kind: str) -> None:
    assert DEPENDENCY_TYPES[condition] == kind
    on_elements = replace(spec(), dependency=Dependency(condition, ("42_1", "42_3")))
    options = sbatch_options(on_elements)
    assert options[-2:] == [f"--dependency={kind}:42_1:42_3", "--kill-on-invalid-dep=yes"]
    assert sum(o.startswith("--dependency") for o in options) == 1
    on_jobs = replace(spec(), dependency=Dependency(condition, ("42", "43_0", "44")))
    assert f"--dependency={kind}:42:43_0:44" in sbatch_options(on_jobs)
    script = render_script(on_elements)
    lines = script.splitlines()
    assert f"#SBATCH --dependency={kind}:42_1:42_3" in lines
    assert lines.index("#SBATCH --kill-on-invalid-dep=yes") < next(
        i for i, line in enumerate(lines) if line.startswith("exec ")
    )


def test_every_condition_has_a_slurm_dependency_type() -> None:
    assert set(DEPENDENCY_TYPES) == set(Condition)


def test_no_dependency_no_dependency_options() -> None:
    text = render_script(spec(extra={"mail-type": "END"}))
    assert "dependency" not in text and "kill-on-invalid-dep" not in text
    assert not any("dep" in option for option in sbatch_options(spec()))


def test_with_a_command_the_exec_line_ends_with_the_here_document() -> None:
    command = "echo \"$HOSTNAME\" `date`\nCORRAL_COMMAND\necho 'done'"
    with_command = replace(spec(), command=command)
    text = render_script(with_command)
    plain = render_script(spec())
    exec_line = next(line for line in plain.splitlines() if line.startswith("exec "))
    assert text == plain.replace(
        exec_line, exec_line + " <<'CORRAL_COMMAND_'\n" + command + "\nCORRAL_COMMAND_"
    )
    assert text.endswith(f"\n{command}\nCORRAL_COMMAND_\n")


def test_the_slurm_script_gives_the_command_to_the_worker_on_stdin(tmp_path: Path) -> None:
    python = stand_in_python(tmp_path)
    command = "echo $SLURM_JOB_ID '$x' \"`hostname`\" \\\\\nexit 3"
    script = tmp_path / "job.sh"
    script.write_text(render_script(replace(spec(), python=str(python), command=command)))
    env = {
        "PATH": os.environ["PATH"],
        "SLURM_ARRAY_TASK_ID": "5",
        "SLURM_ARRAY_JOB_ID": "9",
        "SLURM_JOB_ID": "14",
    }
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"-m corral.worker {spec().batch_dir} 1 5 9_5\n{command}\n"
