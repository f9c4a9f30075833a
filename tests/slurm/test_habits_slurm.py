"""slurminade's habits on the real SLURM test cluster, each proven from SLURM's own accounting
(sacct Start and End): ``corral.join()`` orders the jobs, ``after(..., condition="started")``
lets the dependent start while the first still runs, ``singleton`` jobs never overlap, a raw
job id of a plain ``sbatch --wrap`` job is a dependency, and ``clusters=`` puts ``-M`` into
every scheduler command (logged through PATH shims)."""

from __future__ import annotations

import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
from benchmarks.shims import CommandLog

import corral

from .helpers import wait_for


@pytest.fixture(autouse=True)
def on_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_queue: None) -> Path:
    """Tasks of these tests go to SLURM, with their work dir and job cwd in tmp_path."""
    monkeypatch.setenv("CORRAL_OUTCOME_GRACE", "2")
    monkeypatch.chdir(tmp_path)
    corral.set_defaults(backend="slurm", directory=str(tmp_path / "work"))
    return tmp_path


@corral.task(time="0:05:00")
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@corral.task(time="0:05:00")
def fail() -> None:
    raise RuntimeError("on purpose")


def square(x: int) -> int:
    return x * x


Span = tuple[datetime, datetime]


def spans(*job_ids: str) -> dict[str, Span]:
    """Start and End of these jobs (or array elements) from sacct, once it has them all
    final (slurmdbd lags a little behind the controller)."""
    found: dict[str, Span] = {}

    def recorded() -> bool:
        argv = ["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", "JobID,State,Start,End"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
        found.clear()
        for line in out.splitlines():
            job, state, start, end = line.split("|")
            if state in ("PENDING", "RUNNING") or "Unknown" in (start, end):
                return False
            found[job] = (datetime.fromisoformat(start), datetime.fromisoformat(end))
        return set(job_ids) <= set(found)

    wait_for(recorded, 120, f"sacct to record {job_ids} as ended")
    return {job: found[job] for job in job_ids}


def ids(refs: list[corral.JobRef[object]]) -> list[str]:
    assert all(ref.job_id for ref in refs)
    return [str(ref.job_id) for ref in refs]


def test_join_runs_every_later_job_after_every_earlier_one_ended() -> None:
    before = [nap.distribute(4), nap.distribute(2), fail.distribute()]
    corral.join()  # returns at once
    assert not any(ref.done() for ref in before)
    after = [nap.distribute(0), nap.options(cpus=1).distribute(0)]  # two groups, two jobs
    assert [ref.result(timeout=180) for ref in after] == [0, 0]  # afterany: the failure holds nothing
    with pytest.raises(RuntimeError, match="on purpose"):
        before[2].result(timeout=60)
    times = spans(*ids(before), *ids(after))
    last_end = max(times[j][1] for j in ids(before))
    assert min(times[j][0] for j in ids(after)) >= last_end, times


def test_started_lets_the_dependent_start_while_the_first_still_runs() -> None:
    first = nap.distribute(8)
    second = nap.after(first, condition="started").distribute(0)
    assert second.result(timeout=180) == 0
    assert not first.done()  # it still runs: the dependent did not wait for its end
    assert first.result(timeout=180) == 8
    times = spans(str(first.job_id), str(second.job_id))
    (first_start, first_end), (second_start, _) = times[str(first.job_id)], times[str(second.job_id)]
    assert first_start <= second_start < first_end, times


def test_singleton_jobs_of_one_name_never_overlap() -> None:
    """8 CPUs free, 4 jobs of 2 s: without singleton they would all run at once."""
    single = nap.options(singleton=True, job_name="corral-habits-single")
    refs = [single.distribute(2) for _ in range(4)]
    assert [ref.result(timeout=240) for ref in refs] == [2, 2, 2, 2]
    times = sorted(spans(*ids(refs)).values())
    assert all(end <= start for (_, end), (start, _) in zip(times, times[1:], strict=False)), times
    names = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", ",".join(ids(refs)), "-o", "JobName"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.split()  # fmt: skip
    assert set(names) == {"corral-habits-single"}


def test_a_raw_job_id_of_a_plain_sbatch_job_is_a_dependency(tmp_path: Path) -> None:
    raw = subprocess.run(
        ["sbatch", "--parsable", "-o", "/dev/null", "--wrap", "sleep 4"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.strip()  # fmt: skip
    by_text = nap.after(raw).distribute(0)
    by_number = corral.sbatch("echo after", after=int(raw), condition="any")
    assert by_text.result(timeout=180) == 0
    assert by_number.result(timeout=180).stdout == "after\n"
    times = spans(raw, str(by_text.job_id), str(by_number.job_id))
    assert times[str(by_text.job_id)][0] >= times[raw][1]
    assert times[str(by_number.job_id)][0] >= times[raw][1]
    with pytest.raises(ValueError, match="a job id is"):
        nap.after(f"{raw}.0")


def test_clusters_puts_m_into_every_scheduler_command(commands: CommandLog) -> None:
    with corral.Executor(backend="slurm", clusters="corral-test", time="0:05:00") as ex:
        assert list(ex.map(square, range(6), chunksize=2)) == [x * x for x in range(6)]
        assert ex.cluster.backend.clusters == "corral-test"  # type: ignore[attr-defined]
    ref = nap.options(clusters="corral-test").distribute(0)
    later = nap.options(clusters="corral-test").after(ref).distribute(1)
    assert later.result(timeout=180) == 1
    corral_commands = commands.argvs()
    names = {argv[0] for argv in corral_commands}
    assert {"sbatch", "squeue", "scontrol", "sinfo"} <= names, names
    assert all(argv[1:3] == ["-M", "corral-test"] for argv in corral_commands), corral_commands
    job = str(later.job_id).split("_")[0]
    assert job.isdigit() and spans(str(later.job_id))  # the id without ';corral-test'
