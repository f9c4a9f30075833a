"""@task, Batch, sbatch and srun on the real SLURM test cluster: the scheduler's own
dependencies, a client that leaves before the work is done, the budget, shell commands and
configuration profiles."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import corral
import corral.engine.budget
from tests.unit.test_task_local import check_pipeline

from .helpers import ROOT, squeue, wait_for


@pytest.fixture(autouse=True)
def on_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_queue: None) -> Path:
    """Tasks of these tests go to SLURM, with their work dir and job cwd in tmp_path."""
    monkeypatch.setenv("CORRAL_OUTCOME_GRACE", "2")
    monkeypatch.chdir(tmp_path)
    corral.set_defaults(backend="slurm", directory=str(tmp_path / "work"))
    return tmp_path


@corral.task(time="0:05:00")
def fail(message: str) -> None:
    raise ValueError(message)


@corral.task(time="0:05:00")
def touch(path: str) -> str:
    Path(path).write_text(os.environ["SLURM_JOB_ID"])
    return path


@corral.task
def untimed(path: str) -> None:
    Path(path).write_text("x")


def sacct(job: str, field: str) -> str:
    """A finished job's accounting fields, once slurmdbd has them (it lags a little)."""
    found = ""

    def recorded() -> bool:
        nonlocal found
        argv = ["sacct", "-n", "-X", "-P", "-j", job, "-o", f"State,{field}"]
        state, _, found = (
            subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip().partition("|")
        )
        return bool(state) and state not in ("PENDING", "RUNNING")

    wait_for(recorded, 60, f"slurmdbd to record job {job}")
    return found


def test_the_classic_pipeline_is_chained_by_slurm_after_the_client_left(tmp_path: Path) -> None:
    out = tmp_path / "out"
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    env = {**os.environ, "CORRAL_BACKEND": "slurm", "CORRAL_DIR": str(tmp_path / "client-work")}
    client = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "task_pipeline.py"), str(out)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    exited = time.time()
    assert client.returncode == 0, client.stderr
    assert "runs in 5 jobs" in client.stdout
    assert not (out / "summary.json").exists()  # the client is gone; the work is not done
    assert squeue("-u", "root")  # ... and waits in SLURM
    wait_for(lambda: (out / "summary.json").exists(), 300, "clean_up to run")
    summary = check_pipeline(out)  # prepare before every run, clean_up after all, 5 run jobs
    prepare = json.loads((out / "prepare.json").read_text())
    assert exited < prepare["end"]

    def run_elements() -> list[str]:
        return subprocess.run(
            ["sacct", "-n", "-X", "-P", "--name=corral-run", "-S", started, "-o", "JobID"],
            capture_output=True, text=True, timeout=30,
        ).stdout.split()  # fmt: skip

    wait_for(lambda: len(run_elements()) >= 5, 60, "slurmdbd to record the run jobs")  # it lags
    elements = run_elements()
    assert len(elements) == 5 and len({e.split("_")[0] for e in elements}) == 1  # one array of 5

    # The same script where there is no SLURM (no sbatch on PATH) gives the same outputs.
    local_out = tmp_path / "local-out"
    no_slurm = {"PATH": os.path.dirname(sys.executable), "CORRAL_DIR": str(tmp_path / "local-work")}
    laptop = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "task_pipeline.py"), str(local_out)],
        env=no_slurm, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert laptop.returncode == 0, laptop.stderr
    assert check_pipeline(local_out)["results"] == summary["results"]


def test_a_job_after_a_failed_one_never_runs_and_its_ref_says_why(tmp_path: Path) -> None:
    marker = tmp_path / "must-not-exist"
    bad = fail.distribute("broken input")
    dependent = touch.after(bad).distribute(str(marker))
    assert dependent.job_id is not None
    with pytest.raises(corral.DependencyError) as caught:
        dependent.result(timeout=120)
    message = str(caught.value)
    assert f"job {bad.job_id}" in message and "ended FAILED" in message and "condition='ok'" in message
    assert not marker.exists()
    # Never started, so SLURM keeps it as the whole array ("<job>_[0]"), not as its element.
    assert sacct(dependent.job_id.split("_")[0], "State").startswith("CANCELLED")
    assert sacct(bad.job_id, "State") == "FAILED"  # the call's exception failed its job
    with pytest.raises(ValueError, match="broken input"):
        bad.result()
    # "notok" runs exactly when it failed.
    assert touch.after(bad, condition="notok").distribute(str(marker)).result(timeout=120) == str(marker)


def test_the_budget_stops_a_loop_of_ten_thousand_single_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_SUBMIT_BUDGET", "30")
    submitted = []
    with pytest.raises(corral.SubmissionBudgetError, match="Batch"):
        for i in range(10_000):
            submitted.append(touch.distribute(str(tmp_path / f"t{i}")))
    assert len(submitted) == 30 and corral.engine.budget.spent() == 30
    jobs = {ref.job_id.split("_")[0] for ref in submitted if ref.job_id}
    assert len(jobs) == 30
    assert len(list((tmp_path / "work").iterdir())) == 30  # nothing past the limit was written
    wait_for(lambda: all(ref.done() for ref in submitted), 300, "the 30 jobs")


def test_sbatch_writes_the_nodes_name_and_srun_reports_the_exit_code(tmp_path: Path) -> None:
    ref = corral.sbatch('echo "$HOSTNAME" > host.txt; echo "$SLURMD_NODENAME" > node.txt')
    assert ref.result(timeout=120).returncode == 0
    node = sacct(ref.job_id or "", "NodeList")  # the node SLURM ran it on
    assert node in {"n1", "n2", "n3", "n4"}
    assert (tmp_path / "host.txt").read_text().strip() == node  # expanded there, not here ("vm")
    assert (tmp_path / "node.txt").read_text().strip() == node
    result = corral.srun("echo on $SLURMD_NODENAME; exit 3")
    assert result.returncode == 3 and result.stdout.startswith("on n")


def test_a_profile_from_a_config_file_applies_and_options_override_it(tmp_path: Path) -> None:
    (tmp_path / "corral.toml").write_text(
        'submit_budget = 100\n\n[profiles.short]\ntime = "0:02:00"\njob_name = "from-profile"\n'
    )
    short = touch.options(profile="short")
    by_profile = short.distribute(str(tmp_path / "a"))
    by_option = short.options(time="0:04:00").distribute(str(tmp_path / "b"))
    for ref in (by_profile, by_option):
        ref.result(timeout=120)
    # touch's own time="0:05:00" beats the profile: a function's options are more specific.
    assert sacct(by_profile.job_id or "", "Timelimit,JobName") == "00:05:00|from-profile"
    assert sacct(by_option.job_id or "", "Timelimit,JobName") == "00:04:00|from-profile"
    ref = untimed.options(profile="short").distribute(str(tmp_path / "c"))
    ref.result(timeout=120)
    assert sacct(ref.job_id or "", "Timelimit") == "00:02:00"  # nothing more specific: the profile's
    executor = corral.Executor(profile="short")
    assert executor.backend == "slurm" and str(executor.resources.time) == "0:02:00"


def test_a_typo_in_the_config_file_is_a_clear_error_before_anything_is_submitted(tmp_path: Path) -> None:
    config = tmp_path / "pyproject.toml"
    config.write_text('[project]\nname = "x"\n\n[tool.corral.profiles.short]\ntmie = "0:02:00"\n')
    with pytest.raises(corral.ConfigError) as caught:
        touch.options(profile="short").distribute(str(tmp_path / "a"))
    assert str(config) in str(caught.value) and "'tmie'" in str(caught.value)
    assert "did you mean 'time'" in str(caught.value)
    assert not (tmp_path / "work").exists() and not squeue("-u", "root")


def test_an_exception_in_a_batch_submits_nothing_to_slurm(tmp_path: Path) -> None:
    refs = []
    with pytest.raises(KeyError), corral.Batch():
        refs = [touch.distribute(str(tmp_path / f"t{i}")) for i in range(10)]
        raise KeyError("stop")
    del refs
    gc.collect()
    time.sleep(2)
    assert not squeue("-u", "root") and not (tmp_path / "work").exists() and corral.engine.budget.spent() == 0
