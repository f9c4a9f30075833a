"""Sweeps on the real SLURM test cluster: one batch for hundreds of trials, pruning that goes
on without a driver, and a node that dies mid-sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from corral import sweep
from corral.engine.policy import PollPolicy
from corral.store.rungs import Rungs

from .helpers import ROOT, cluster, squeue, wait_for


def quick(config: dict[str, float]) -> float:
    """Nine short epochs of a curve whose final value is the config's q."""
    loss = 0.0
    for epoch in range(1, 10):
        time.sleep(0.05)
        loss = config["q"] + 1.0 / epoch
        sweep.log(epoch, loss=loss)
    return loss


def slow(config: dict[str, float]) -> float:
    loss = 0.0
    for epoch in range(1, 10):
        time.sleep(0.5)
        loss = config["q"] + 1.0 / epoch
        sweep.log(epoch, loss=loss)
    return loss


def trial_events(folder: str) -> dict[int, list[dict[str, object]]]:
    found = {}
    for name in os.listdir(Path(folder, "trials")):
        lines = Path(folder, "trials", name).read_text().splitlines()
        found[int(name.split(".")[0])] = [json.loads(line) for line in lines]
    return found


def most_at_once(events: dict[int, list[dict[str, object]]]) -> int:
    """The most trials running at the same time, from their logs' start and end times."""
    edges = []
    for trial in events.values():
        starts = [float(e["t"]) for e in trial if e["e"] == "start"]  # type: ignore[arg-type]
        ends = [float(e["t"]) for e in trial if e["e"] == "end"]  # type: ignore[arg-type]
        edges += [(t, 1) for t in starts] + [(t, -1) for t in ends]
    running = peak = 0
    for _, step in sorted(edges):
        running += step
        peak = max(peak, running)
    return peak


def elements_that_ran(name: str) -> set[str]:
    argv = [
        "sacct",
        "-n",
        "-X",
        "-P",
        f"--name=corral-sweep-{name}",
        "-S",
        "now-1hours",
        "--format=JobID,State",
    ]
    out = subprocess.run(
        argv,
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    return {job for job, _, state in (line.partition("|") for line in out.splitlines()) if "[" not in job}


def test_200_trials_are_at_most_2_sbatch_and_never_more_than_max_running(
    tmp_path: Path, commands, fresh_queue: None
) -> None:
    name = f"many-{os.getpid()}-{time.time_ns()}"
    s = sweep.Sweep(
        quick, {"q": sweep.uniform(0, 1)}, metric="loss", trials=200, search=sweep.Random(seed=7),
        scheduler=sweep.ASHA(min_t=1, max_t=9, eta=3), max_running=6, name=name, progress=False,
        backend="slurm", directory=str(tmp_path / "work"), time="0:10:00",
    )  # fmt: skip
    result = s.run()
    assert commands.counts()["sbatch"] <= 2
    counts = result.counts()
    assert counts["completed"] + counts["pruned"] == 200 and counts["pruned"] >= 100
    best = result.best()
    assert best.status == "completed" and best.step == 9
    assert best.config["q"] == min(t.config["q"] for t in result.trials if t.status == "completed")
    assert most_at_once(trial_events(s.path)) <= 6
    ran = elements_that_ran(name)
    assert 1 <= len(ran) <= 6, ran


DRIVER = """
import sys, time
from corral import sweep

def train(config):
    loss = 0.0
    for epoch in range(1, 10):
        time.sleep(0.6)
        loss = config["q"] + 1.0 / epoch
        sweep.log(epoch, loss=loss)
    return loss

sweep.Sweep(
    train, {"q": sweep.grid([0.5, 0.3, 0.9, 0.7, 0.1, 0.8, 0.2, 0.6, 0.4, 0.0, 0.35, 0.65])},
    metric="loss", scheduler=sweep.ASHA(min_t=1, max_t=9, eta=3), max_running=4, name=sys.argv[1],
    backend="slurm", progress=False, time="0:10:00",
).run()
"""


def test_pruning_goes_on_without_the_driver_and_attach_completes_it(
    tmp_path: Path, fresh_queue: None
) -> None:
    name, work = "orphan", tmp_path / "work"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "CORRAL_DIR": str(work), "PYTHONPATH": str(ROOT / "src")}
    driver = subprocess.Popen([sys.executable, str(script), name], cwd=tmp_path, env=env)
    folder = work / "sweeps" / name
    rungs = Rungs(str(folder / "rungs"))

    def records() -> int:
        return sum(len(rungs.records(m)) for m in rungs.milestones()) if (folder / "rungs").exists() else 0

    try:
        wait_for(lambda: records() >= 3, 120, "the first rung records")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    killed = records()
    wait_for(lambda: records() >= killed + 3, 120, "rung records made after the driver died")
    result = sweep.attach(name, directory=str(work), backend="slurm", progress=False)
    assert {t.status for t in result.trials} <= {"completed", "pruned"}
    assert result.best().config["q"] == 0.0 and result.best().step == 9
    events = trial_events(str(folder))
    assert sorted(events) == list(range(12))
    for trial in events.values():  # each ran once, at attempt 0
        assert [(e["e"], e["a"]) for e in trial if e["e"] != "log"] == [("start", 0), ("end", 0)]
    # The elements find no trial left and end (none waits for work that will not come).
    wait_for(
        lambda: not squeue("-u", "root", "-n", f"corral-sweep-{name}").strip(), 60, "the elements to end"
    )


def test_a_node_dying_mid_sweep_retries_its_trials_and_doubles_no_rung_record(
    tmp_path: Path, fresh_queue: None
) -> None:
    s = sweep.Sweep(
        slow, {"q": sweep.grid([i / 16 for i in range(16)])}, metric="loss",
        scheduler=sweep.ASHA(min_t=1, max_t=9, eta=3), max_running=8, name="node", progress=False,
        backend="slurm", directory=str(tmp_path / "work"), max_retries=2, max_requeues=0, time="0:10:00",
    )  # fmt: skip
    s._executor.cluster.policy = PollPolicy(outcome_grace=3.0)
    outcome: list[sweep.SweepResult] = []
    runner = threading.Thread(target=lambda: outcome.append(s.run()))
    runner.start()
    victim = ""
    try:

        def running_on_a_node() -> bool:
            nonlocal victim
            events = trial_events(s.path) if Path(s.path, "trials").exists() else {}
            nodes = {
                str(e[0].get("node")) for e in events.values() if e and len(e) >= 3 and e[-1]["e"] != "end"
            }
            victim = sorted(nodes)[0] if len(nodes) >= 2 else ""
            return bool(victim)

        wait_for(running_on_a_node, 120, "trials to run on two nodes")
        cluster("stop-node", victim[1:])
    finally:
        runner.join(600)
        if victim:
            cluster("start-node", victim[1:])
    assert outcome, "the sweep did not end"
    result = outcome[0]
    assert {t.status for t in result.trials} <= {"completed", "pruned"}, [t.failure for t in result.trials]
    retried = [t for t in result.trials if t.attempts > 1]
    assert retried, "no trial ran on the node that died"
    events = trial_events(s.path)
    for trial in retried:
        nodes = [e["node"] for e in events[trial.trial] if e["e"] == "start"]
        assert nodes[0] == victim and nodes[-1] != victim
    rungs = Rungs(os.path.join(s.path, "rungs"))
    for milestone in rungs.milestones():
        names = os.listdir(Path(s.path, "rungs", str(milestone)))
        assert len(names) == len(set(names)) == len(rungs.records(milestone))
        for trial in retried:  # a retried trial's records are its first attempt's
            record = rungs.records(milestone).get(trial.trial)
            assert record is None or record.attempt == 0
    assert result.best().config["q"] == 0.0
