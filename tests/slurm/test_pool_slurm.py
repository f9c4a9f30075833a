"""Pool on the real SLURM test cluster, under the failures a shared cluster brings: a node
dies mid-map, the controller restarts mid-map, the user terminates. Every call's side effects
are counted, so a lost or doubled call shows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import corral
from corral.engine.policy import PollPolicy
from corral.store.batch import BatchStore
from corral.transports.local import LocalTransport

from ..unit.fakes import outcomes
from .helpers import ROOT, cluster, squeue, wait_for

#: The default policy, with a shorter grace for outcomes (the cluster's disk is local).
POLICY = PollPolicy(outcome_grace=3.0)


def mark_and_sleep(runs: str, x: int, seconds: float) -> int:
    """Leave one file per run of call x, holding the SLURM node's name (so re-runs are counted
    and placed), then work."""
    Path(runs, f"{x}.{uuid.uuid4().hex}").write_text(os.environ.get("SLURMD_NODENAME", "?"))
    time.sleep(seconds)
    return x * 10


def runs_per_call(runs: Path) -> Counter[int]:
    return Counter(int(name.split(".")[0]) for name in os.listdir(runs))


def nodes_per_call(runs: Path) -> dict[int, list[str]]:
    """The nodes each call's runs started on."""
    found: dict[int, list[str]] = {}
    for path in runs.iterdir():
        found.setdefault(int(path.name.split(".")[0]), []).append(path.read_text())
    return found


def pool(tmp_path: Path, **options: object) -> corral.Pool:
    engine = corral.Cluster(corral.get_backend("slurm"), str(tmp_path / "work"), policy=POLICY)
    return corral.Pool(cluster=engine, **options)  # type: ignore[arg-type]


def test_a_node_dying_mid_map_loses_nothing(tmp_path: Path, fresh_queue: None) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    p = pool(tmp_path, max_requeues=0, keep="all")  # not requeued by SLURM: corral resubmits the calls
    result = p.starmap_async(mark_and_sleep, [(str(runs), x, 1) for x in range(200)])  # 25 s on 8 CPUs
    wait_for(lambda: len(os.listdir(runs)) >= 24, 120, "calls to run on every node")
    victim = squeue("-u", "root", "-t", "RUNNING", "-o", "%N").split()[0]
    assert re.fullmatch(r"n[1-4]", victim), victim
    cluster("stop-node", victim[1:])
    try:
        assert result.get(timeout=600) == [x * 10 for x in range(200)]
    finally:
        cluster("start-node", victim[1:])
    p.terminate()
    counts = runs_per_call(runs)
    assert sorted(counts) == list(range(200)) and max(counts.values()) <= 4  # max_retries + 1
    batch = next((tmp_path / "work").iterdir())
    records = [json.loads(path.read_text()) for path in (batch / "attempts").iterdir()]
    assert records and {r["state"] for r in records} == {"NODE_FAIL"}
    assert {r["node"] for r in records} == {victim}
    # The calls that completed at a later attempt, as their Results in the streams say.
    found = outcomes(BatchStore(str(batch), LocalTransport()))
    retried = {call for call, attempt in found if attempt > 0}
    assert {call for call, _ in found} == set(range(200))
    assert retried == {int(name.split(".")[0]) for name in os.listdir(batch / "attempts")}
    # They ran again, on a node that lived. Their run on the victim may have left no mark: the
    # node can die after the worker took the call and before the function's first line.
    nodes = nodes_per_call(runs)
    assert all(set(nodes[call]) - {victim} for call in retried), {c: nodes[c] for c in retried}
    assert all(nodes[call].count(victim) <= 1 for call in retried)


def test_terminate_leaves_nothing_in_the_queue(tmp_path: Path, fresh_queue: None) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    p = pool(tmp_path)
    first = p.starmap_async(mark_and_sleep, [(str(runs), x, 300) for x in range(40)])
    second = p.starmap_async(mark_and_sleep, [(str(runs), x, 300) for x in range(40, 50)], chunksize=1)
    wait_for(lambda: len(os.listdir(runs)) >= 2, 120, "calls to start")
    p.terminate()
    assert first.ready() and second.ready() and not first.successful()
    wait_for(
        lambda: squeue("-u", "root", "-t", "PENDING,RUNNING", "-o", "%i").strip() == "", 30, "an empty queue"
    )


def test_a_multiprocessing_script_runs_on_the_cluster_with_only_its_import_changed(tmp_path: Path) -> None:
    script = (ROOT / "examples" / "pool_dropin.py").read_text()
    assert "from multiprocessing import Pool" in script
    original, changed = tmp_path / "original.py", tmp_path / "changed.py"
    original.write_text(script)
    changed.write_text(script.replace("from multiprocessing import Pool", "from corral import Pool"))
    env = {**os.environ, "CORRAL_DIR": str(tmp_path / "work"), "CORRAL_KEEP": "all"}  # to look at them
    outputs = [
        subprocess.run(
            [sys.executable, str(p)], capture_output=True, text=True, timeout=300, env=env, check=True
        )
        for p in (original, changed)
    ]
    assert outputs[0].stdout == outputs[1].stdout and "longest chain" in outputs[0].stdout
    batches = list((tmp_path / "work").iterdir())
    assert len(batches) == 5  # map, starmap, imap, imap_unordered, apply_async: one batch each
    for batch in batches:
        assert (batch / "subs" / "0.job").read_text().strip().isdigit()  # each went through sbatch


def test_no_job_before_there_is_work_and_none_idles_after(tmp_path: Path, fresh_queue: None) -> None:
    p = pool(tmp_path)
    assert squeue("-u", "root", "-o", "%i").strip() == ""  # a pool alone asks for nothing
    assert p.map(abs, range(-300, 0)) == list(range(300, 0, -1))
    # its elements leave as soon as the calls are taken: none waits in the queue for work
    wait_for(
        lambda: squeue("-u", "root", "-t", "PENDING,RUNNING", "-o", "%i").strip() == "",
        30,
        "idle elements to go",
    )
    p.terminate()
