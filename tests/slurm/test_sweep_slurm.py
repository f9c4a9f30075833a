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
from .test_steps_slurm import STALL, element_logs, jobs, most_at_once, sacct_job, sacct_steps

__all__ = ["jobs"]  # a fixture, used here as in test_steps_slurm


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


def most_trials_at_once(events: dict[int, list[dict[str, object]]]) -> int:
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
    assert most_trials_at_once(trial_events(s.path)) <= 6
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
    # Each trial is better than those before it, so none is pruned and all run long enough.
    s = sweep.Sweep(
        slow, {"q": sweep.grid([(15 - i) / 16 for i in range(16)])}, metric="loss",
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
        for trial in retried:  # where its first attempt got, the records are that attempt's
            reached = max(
                [float(e["s"]) for e in events[trial.trial] if e["e"] == "log" and e["a"] == 0] or [0]
            )
            record = rungs.records(milestone).get(trial.trial)
            if milestone <= reached:
                assert record is not None and record.attempt == 0
            elif record is not None:  # not reached before, and not pruned before it since
                assert record.attempt == 1
    assert result.best().config["q"] == 0.0


STEPS_DRIVER = """
import json, sys, time
from corral import sweep

def train(config):
    loss = 0.0
    for epoch in range(1, 10):
        time.sleep(0.4)
        loss = config["q"] + 1.0 / epoch
        sweep.log(epoch, loss=loss)
    return loss

launcher, name, out = sys.argv[1:4]
options = {"backend": "slurm", "time": "0:10:00"} if launcher == "array" else {}
result = sweep.Sweep(
    train, {"q": sweep.grid([(7 * i) % 24 / 24 for i in range(24)])}, metric="loss",
    scheduler=sweep.ASHA(min_t=1, max_t=9, eta=3), max_running=8, name=name, progress=False,
    launcher=launcher, **options,
).run()
json.dump({"configs": [t.config for t in result.trials], "best": result.best().config,
           "statuses": [t.status for t in result.trials], "nodes": sorted({t.node for t in result.trials})},
          open(out, "w"))
"""


def test_steps_launcher_inside_an_allocation_matches_array_mode(tmp_path: Path, jobs: list[str]) -> None:
    script = tmp_path / "driver.py"
    script.write_text(f"#!{sys.executable}\n{STEPS_DRIVER}")
    script.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CORRAL_DIR": str(tmp_path / "work")}
    argv = [
        "sbatch", "--parsable", "-N4", "-n8", "--mem=3000", "--time=10", f"--chdir={tmp_path}",
        f"--output={tmp_path / 'driver.out'}", f"--error={tmp_path / 'driver.err'}",
        str(script), "steps", "in-steps", str(tmp_path / "steps.json"),
    ]  # fmt: skip
    job = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=True).stdout.strip()
    jobs.append(job)
    wait_for(lambda: not squeue("-j", job, "-o", "%i").strip(), 300, f"driver job {job} to end")
    stderr = (tmp_path / "driver.err").read_text()
    assert (tmp_path / "steps.json").exists(), stderr
    steps = json.loads((tmp_path / "steps.json").read_text())
    assert STALL not in stderr and STALL not in element_logs(tmp_path)
    wait_for(lambda: len(sacct_steps(job)) >= 8, 60, "sacct to know the steps")
    assert most_at_once(list(sacct_steps(job).values())) >= 7, sacct_job(job)
    assert set(steps["statuses"]) <= {"completed", "pruned"} and steps["nodes"] == ["n1", "n2", "n3", "n4"]
    # The same sweep as array jobs: the same trials, the same best.
    out = tmp_path / "array.json"
    subprocess.run(
        [sys.executable, str(script), "array", "in-array", str(out)],
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=True,
    )
    array = json.loads(out.read_text())
    assert steps["configs"] == array["configs"] and steps["best"] == array["best"] == {"q": 0.0}
