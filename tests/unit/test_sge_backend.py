"""SgeBackend's own logic (which commands it runs, what it remembers between polls) on a
transport that answers with output recorded from the real SGE cell (tests/data/sge/)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from corral import JobState, Resources
from corral.backends.base import ArraySpec, Limits
from corral.backends.sge import SgeBackend
from corral.errors import SchedulerError, SubmissionError
from corral.transports.base import CommandResult
from corral.transports.local import LocalTransport

DATA = Path(__file__).resolve().parents[1] / "data" / "sge"
PRSZ = ("qstat", "-xml", "-s", "prsz")


def recorded(name: str) -> tuple[int, str, str]:
    def read(suffix: str) -> str:
        path = DATA / f"{name}.{suffix}"
        return path.read_text() if path.exists() else ""

    return int(read("rc").strip() or 0), read("txt"), read("stderr")


class Recorded(LocalTransport):
    """Answers each argv with a recorded file (the last one given keeps answering)."""

    def __init__(self, answers: dict[tuple[str, ...], str | list[str]]) -> None:
        self.answers = {argv: [a] if isinstance(a, str) else list(a) for argv, a in answers.items()}
        self.calls: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str], *, timeout: float) -> CommandResult:
        key = tuple(argv)
        self.calls.append(key)
        queue = self.answers[key]
        rc, out, err = recorded(queue.pop(0) if len(queue) > 1 else queue[0])
        return CommandResult(key, rc, out, err)

    def count(self, program: str) -> int:
        return sum(argv[0] == program for argv in self.calls)


def states(found: dict[str, object]) -> dict[str, JobState]:
    return {eid: status.state for eid, status in found.items()}  # type: ignore[attr-defined]


def test_ended_tasks_of_a_live_job_come_from_qacct_once() -> None:
    transport = Recorded({PRSZ: "qstat_all_states", ("qacct", "-j", "18"): "qacct_mixed"})
    backend = SgeBackend(transport)
    expected = {
        "18_0": JobState.COMPLETED, "18_1": JobState.FAILED, "18_2": JobState.RUNNING,
        "18_3": JobState.RUNNING, "18_4": JobState.PENDING, "18_5": JobState.PENDING,
    }  # fmt: skip
    assert states(backend.poll(["18"])) == expected  # qacct has 18_2/3 too: qstat, live, wins
    assert states(backend.poll(["18"])) == expected
    assert transport.count("qacct") == 1  # how 18_0 and 18_1 ended is known now
    assert backend.poll(["18"])["18_1"].describe_end() == "exit code 3"


def test_a_job_gone_from_qstat_is_read_from_qacct_and_an_unknown_one_is_not_reported() -> None:
    transport = Recorded(
        {
            PRSZ: "qstat_empty",
            ("qacct", "-j", "5"): "qacct_timeout",
            ("qacct", "-j", "999999"): "qacct_unknown",
        }
    )
    backend = SgeBackend(transport)
    assert states(backend.poll(["5", "999999"])) == {"5_0": JobState.TIMEOUT, "5_1": JobState.TIMEOUT}
    assert backend.poll(["999999"]) == {}
    assert backend.poll([]) == {}


def spec(tmp_path: Path, elements: int = 6) -> ArraySpec:
    return ArraySpec(str(tmp_path / "batch"), 0, elements, Resources(), "corral-x", "/py", str(tmp_path))


def patterns(tmp_path: Path) -> tuple[str, str]:
    return str(tmp_path / "job-{job}_{index}.out"), str(tmp_path / "job-{job}_{index}.err")


def test_arrays_submitted_here_are_followed_without_zombies(tmp_path: Path) -> None:
    """qmaster forgets zombies when it restarts; the array's size says which tasks ended."""
    argv = SgeBackend(LocalTransport()).submit_argv(spec(tmp_path), "/s.sh", patterns(tmp_path))
    transport = Recorded(
        {tuple(argv): "qsub_terse_array", PRSZ: "qstat_empty", ("qacct", "-j", "3"): "qacct_completed"}
    )
    backend = SgeBackend(transport)
    assert backend.submit(spec(tmp_path), "/s.sh", patterns(tmp_path)) == "3"
    assert set(states(backend.poll(["3"])).values()) == {JobState.COMPLETED}
    assert len(backend.poll(["3"])) == 6
    assert transport.count("qacct") == 1


def test_submit_argv_hands_the_element_paths_to_the_script(tmp_path: Path) -> None:
    out, err = patterns(tmp_path)
    argv = SgeBackend(LocalTransport()).submit_argv(spec(tmp_path), "/w/s.sh", (out, err))
    own = str(tmp_path / "job-$JOB_ID_task$TASK_ID.err")
    assert argv == ["qsub", "-terse", "-wd", str(tmp_path), "-j", "y", "-o", own, "/w/s.sh", out, err]


def test_a_refused_submission_says_what_qsub_said(tmp_path: Path) -> None:
    argv = SgeBackend(LocalTransport()).submit_argv(spec(tmp_path), "/s.sh", patterns(tmp_path))
    backend = SgeBackend(Recorded({tuple(argv): "qsub_bad_queue"}))
    with pytest.raises(SubmissionError, match='unknown queue "nosuch"') as info:
        backend.submit(spec(tmp_path), "/s.sh", patterns(tmp_path))
    assert info.value.argv == argv
    with pytest.raises(SubmissionError, match="':'"):
        backend.submit(spec(tmp_path), "/s.sh", ("/a:b/{job}.out", "/a:b/{job}.err"))


def test_pending_only_cancel_holds_deletes_the_pending_tasks_and_reports_them_cancelled() -> None:
    transport = Recorded(
        {
            ("qhold", "56"): "qhold_mixed",
            ("qstat", "-xml", "-s", "p"): "qstat_held_pending",
            ("qdel", "56.2-4"): "qdel_held_pending",
            PRSZ: "qstat_after_hold_and_pending_cancel",
            ("qacct", "-j", "56"): "qacct_unknown",  # 56.1 still runs; 56.2-4 never ran
        }
    )
    backend = SgeBackend(transport)
    backend.cancel(["56"], pending_only=True)
    assert transport.calls[:3] == [("qhold", "56"), ("qstat", "-xml", "-s", "p"), ("qdel", "56.2-4")]
    found = backend.poll(["56"])
    assert states(found) == {
        "56_0": JobState.RUNNING, "56_1": JobState.CANCELLED, "56_2": JobState.CANCELLED,
        "56_3": JobState.CANCELLED,
    }  # fmt: skip
    assert found["56_1"].reason == "deleted before it started"


def test_a_kill_after_our_qdel_is_cancelled_and_after_someone_elses_failed() -> None:
    answers: dict[tuple[str, ...], str | list[str]] = {
        ("qdel", "9"): "qdel_running",
        PRSZ: "qstat_empty",
        ("qacct", "-j", "9"): "qacct_cancelled",
    }
    ours = SgeBackend(Recorded(answers))
    ours.cancel(["9"])
    assert set(states(ours.poll(["9"])).values()) == {JobState.CANCELLED}
    theirs = SgeBackend(Recorded(answers))
    assert {s.describe_end() for s in theirs.poll(["9"]).values()} == {"killed by signal 9 (SIGKILL)"}
    SgeBackend(Recorded({("qdel", "16", "17", "18", "999999"): "qdel_mixed"})).cancel(
        ["16", "17", "18", "999999"]
    )
    with pytest.raises(SchedulerError, match="qdel failed"):  # any other refusal
        SgeBackend(Recorded({("qdel", "1"): "qsub_bad_name"})).cancel(["1"])


def test_an_ended_task_without_a_record_waits_for_the_accounting_file_then_is_cancelled() -> None:
    transport = Recorded({PRSZ: "qstat_all_states", ("qacct", "-j", "18"): "qacct_unknown"})
    backend = SgeBackend(transport)
    first = backend.poll(["18"])
    assert (first["18_0"].state, first["18_0"].reason) == (
        JobState.RUNNING,
        "ended; waiting for its accounting record",
    )
    backend.accounting_grace = 0.0
    assert backend.poll(["18"])["18_0"].state is JobState.CANCELLED


def test_limits_from_the_global_config_and_the_queue_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = Recorded({("qconf", "-sconf"): "qconf_sconf", ("qstat", "-g", "c"): "qstat_g_c"})
    backend = SgeBackend(transport)
    assert backend.limits(Resources()) == Limits(max_array_size=75000, max_submit_jobs=None, slots=4)
    assert backend.limits(Resources(cpus=2, partition="all.q")).slots == 2
    assert backend.limits(Resources(partition="nosuch.q")).slots == 1
    assert backend.limits(Resources()) is backend.limits(Resources())  # discovered once
    monkeypatch.setenv("CORRAL_SLOTS", "7")
    monkeypatch.setenv("CORRAL_MAX_SUBMIT_JOBS", "50")
    assert SgeBackend(transport).limits(Resources()) == Limits(75000, 50, 7)


def test_widen_queued_jobs_transient_and_available() -> None:
    transport = Recorded(
        {
            ("qalter", "-tc", "4", "3"): "qalter_tc",
            ("qalter", "-tc", "4", "999999"): "qalter_tc_unknown",
            ("qstat", "-xml"): "qstat_throttled",
            ("qconf", "-sss"): ["qconf_sss", "qconf_qmaster_down"],
        }
    )
    backend = SgeBackend(transport)
    backend.widen("3", 4)
    backend.widen("999999", 4)  # gone: nothing to widen
    assert backend.queued_jobs() == 7
    down = CommandResult(("qstat",), *recorded("qstat_qmaster_down"))
    assert backend.transient(down) and not backend.transient(
        CommandResult(("qsub",), *recorded("qsub_bad_queue"))
    )
    assert SgeBackend.available(transport) and not SgeBackend.available(transport)
    assert not SgeBackend.available(NotInstalled())


class NotInstalled(LocalTransport):
    def run(self, argv: Sequence[str], *, timeout: float) -> CommandResult:
        raise FileNotFoundError(argv[0])
