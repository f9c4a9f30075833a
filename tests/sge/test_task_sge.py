"""@task, Batch and sbatch on the real SGE test cell: jobs chained with -hold_jid (SGE waits
for jobs to end, however they end: condition="any"), and the conditions it cannot keep
refused before anything is submitted."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import corral


@pytest.fixture(autouse=True)
def on_sge(workdir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_OUTCOME_GRACE", "2")
    monkeypatch.chdir(tmp_path)
    corral.set_defaults(backend="sge", directory=workdir)


@corral.task
def stamp(path: str, seconds: float) -> str:
    start = time.time()
    time.sleep(seconds)
    Path(path).write_text(f"{start} {time.time()} {os.environ['JOB_ID']}")
    return os.environ["JOB_ID"]


def times(path: Path) -> tuple[float, float, str]:
    start, end, job = path.read_text().split()
    return float(start), float(end), job


def test_a_batch_runs_after_a_job_with_condition_any(tmp_path: Path) -> None:
    first = stamp.distribute(str(tmp_path / "first"), 2)
    with corral.Batch(max_size=5) as batch:
        for i in range(10):
            stamp.after(first, condition="any").distribute(str(tmp_path / f"then-{i}"), 0)
    assert [ref.result(timeout=180) for ref in batch.refs]
    _, first_end, _ = times(tmp_path / "first")
    later = [times(tmp_path / f"then-{i}") for i in range(10)]
    assert all(start >= first_end for start, _, _ in later)
    assert len({job for _, _, job in later}) == 1  # one array job of two tasks
    assert len({ref.job_id for ref in batch.refs}) == 2


def test_sbatch_runs_a_command_on_the_cell_and_conditions_sge_cannot_keep_are_refused(tmp_path: Path) -> None:
    ref = corral.sbatch('echo "job $JOB_ID on $HOSTNAME" > where.txt')
    assert ref.result(timeout=120).returncode == 0
    assert (tmp_path / "where.txt").read_text().startswith(f"job {ref.job_id.split('_')[0]} on ")
    assert corral.srun("exit 3").returncode == 3
    with pytest.raises(corral.SubmissionError, match="condition='ok'.*it can with: 'any'"):
        stamp.after(ref).distribute(str(tmp_path / "never"), 0)
    assert not (tmp_path / "never").exists()


def test_an_sge_script_given_as_the_command_keeps_its_directives_to_itself(tmp_path: Path) -> None:
    # qsub reads "#$" lines anywhere in a script: this one must not give the job a 2 s limit
    result = corral.srun('#$ -l h_rt=2\nsleep 5; echo "task ${SGE_TASK_ID}" >> tasks.txt')
    assert result.returncode == 0
    assert (tmp_path / "tasks.txt").read_text() == "task 1\n"
