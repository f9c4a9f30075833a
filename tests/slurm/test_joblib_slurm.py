"""joblib's "corral" backend on the real SLURM test cluster (4 nodes, 2 CPUs each):
scikit-learn's GridSearchCV(n_jobs=-1) finds what n_jobs=1 finds, in one array job, and a
task's exception comes back with the rest of the call cancelled in the scheduler."""

from __future__ import annotations

import os
import time
from pathlib import Path

import joblib
import pytest
from benchmarks.shims import CommandLog
from sklearn.datasets import load_iris
from sklearn.model_selection import GridSearchCV
from sklearn.svm import SVC

import corral
import corral.joblib
from corral.engine.policy import PollPolicy

from .helpers import squeue, wait_for

pytestmark = pytest.mark.usefixtures("fresh_queue")

#: The default policy, with a shorter grace for outcomes (the cluster's disk is local).
POLICY = PollPolicy(outcome_grace=3.0)


def engine(tmp_path: Path) -> corral.Cluster:
    return corral.Cluster(corral.get_backend("slurm"), str(tmp_path / "work"), policy=POLICY)


def node_or_fail(x: int, marks: str) -> str:
    if x == 0:
        time.sleep(5)  # the others are running by then
        raise LookupError("task 0 found nothing")
    Path(marks, f"{x}.started").write_text("")
    time.sleep(600)
    Path(marks, f"{x}.finished").write_text("")
    return os.environ["SLURMD_NODENAME"]


def test_grid_search_of_100_fits_equals_n_jobs_1_in_at_most_3_sbatch(
    tmp_path: Path, commands: CommandLog
) -> None:
    x, y = load_iris(return_X_y=True)
    grid = {"C": [0.01, 0.1, 1.0, 10.0, 100.0], "gamma": ["scale", 0.01, 0.1, 1.0]}  # 20 settings
    alone = GridSearchCV(SVC(), grid, cv=5, n_jobs=1).fit(x, y)
    commands.reset()
    with joblib.parallel_config(backend="corral", cluster=engine(tmp_path), time="0:10:00"):
        spread = GridSearchCV(SVC(), grid, cv=5, n_jobs=-1).fit(x, y)
    assert spread.best_params_ == alone.best_params_
    assert len(spread.cv_results_["mean_test_score"]) == 20
    assert list(spread.cv_results_["mean_test_score"]) == list(alone.cv_results_["mean_test_score"])
    assert list(spread.cv_results_["params"]) == list(alone.cv_results_["params"])
    assert 1 <= commands.counts()["sbatch"] <= 3
    assert len(os.listdir(tmp_path / "work")) == 1  # the 100 fits were one batch


def test_a_tasks_exception_comes_back_and_its_call_is_cancelled(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    with (
        joblib.parallel_config(backend="corral", cluster=engine(tmp_path), max_running=4),
        pytest.raises(LookupError, match="task 0 found nothing") as raised,
    ):
        joblib.Parallel(n_jobs=-1)(joblib.delayed(node_or_fail)(i, str(marks)) for i in range(8))
    assert "node_or_fail" in str(raised.value.__cause__)  # the node's traceback
    assert len(list(marks.glob("*.started"))) >= 1  # some ran on the nodes, and were stopped
    wait_for(lambda: not squeue("-u", "root").strip(), 60, "the call's jobs to leave the queue")
    assert not list(marks.glob("*.finished"))
