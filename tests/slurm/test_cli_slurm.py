"""`corral status` and `corral logs` on batches that ran on the real SLURM test cluster."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.usefixtures("fresh_queue")


def square(x: int) -> int:
    return x * x


def shaky(x: int) -> int:
    print(f"working on {x}")
    if x == 2:
        raise ValueError(f"cannot do {x}")
    return x


def corral(*argv: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "corral", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_status_and_logs_show_a_finished_and_a_failed_batch(make_executor, workdir: str) -> None:
    ex = make_executor("slurm")
    assert list(ex.map(square, range(5))) == [0, 1, 4, 9, 16]
    results = ex.map(shaky, range(4))
    batch = ex._batches[-1]  # held here: the executor keeps only weak references to done batches
    with pytest.raises(ValueError, match="cannot do 2"):
        list(results)
    finished = next(n for n in os.listdir(workdir) if n.startswith("square-"))
    failed = next(n for n in os.listdir(workdir) if n.startswith("shaky-"))

    listing = corral("status", "--dir", workdir)
    assert listing.returncode == 0, listing.stderr
    lines = {line.split()[0]: line for line in listing.stdout.splitlines() if line.strip()}
    assert lines[finished].endswith("5 completed · 0 failed · 0 running · 0 pending")
    assert lines[failed].endswith("3 completed · 1 failed · 0 running · 0 pending")
    assert "slurm" in lines[finished]

    one = corral("status", failed, "--dir", workdir)
    assert one.returncode == 0, one.stderr
    assert "calls     4: 3 completed · 1 failed · 0 running · 0 pending" in one.stdout
    assert "ValueError" in one.stdout and "cannot do 2" in one.stdout
    job = batch.subs[0].job_id
    assert job in one.stdout  # the job id sacct knows it by

    logs = corral("logs", failed, "2", "--dir", workdir)
    assert logs.returncode == 0, logs.stderr
    assert "working on 2" in logs.stdout
    assert 'raise ValueError(f"cannot do {x}")' in logs.stdout
    assert corral("logs", finished, "3", "--out", "--dir", workdir).stdout == ""
    assert corral("logs", failed, "3", "--out", "--dir", workdir).stdout == "working on 3\n"


def test_logs_show_the_element_stderr_of_a_call_that_failed_outside_the_function(
    make_executor, workdir: str
) -> None:
    """Issue 11 item 10: the node cannot import the function's module, so the call has no
    outcome and no output of its own; the cause is in the element's stderr, which logs shows."""
    import importlib.machinery
    import types

    from corral.errors import JobError

    module = types.ModuleType("helpers_mod_nowhere")  # importable here only: not on disk
    module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
    exec("def helper(x):\n    return x\n", module.__dict__)
    sys.modules[module.__name__] = module
    try:
        ex = make_executor("slurm", max_retries=0)
        with pytest.raises(JobError):
            ex.submit(module.helper, 1).result()
    finally:
        del sys.modules[module.__name__]
    (batch,) = [n for n in os.listdir(workdir) if n.startswith("helper-")]
    logs = corral("logs", batch, "0", "--dir", workdir)
    assert logs.returncode == 0, logs.stderr
    assert ", the array element of this call (" in logs.stdout
    assert "No module named 'helpers_mod_nowhere'" in logs.stdout
    assert logs.stdout.index("== stderr of ") < logs.stdout.index("== failure ==")


# -- the commands that act (issue 15) -----------------------------------------------------------


def nap(x: int) -> int:
    import time

    time.sleep(300)
    return x


def queued(job_ids: list[str]) -> set[str]:
    """The jobs of ``job_ids`` that squeue still lists (array elements by their job)."""
    out = subprocess.run(
        ["squeue", "-h", "-r", "-o", "%F", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return set(out.stdout.split()) & set(job_ids)


def wait_until(condition, what: str, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what}")
        time.sleep(0.5)


def test_cancel_empties_the_queue_of_that_batch_only(make_executor, workdir: str) -> None:  # type: ignore[no-untyped-def]
    import json

    from corral.errors import JobCancelledError

    ex = make_executor("slurm", max_retries=0)
    doomed = ex.map(nap, range(4))
    ex.map(nap, range(2))  # the batch that must run on
    doomed_batch, kept_batch = ex._batches[-2], ex._batches[-1]
    wait_until(lambda: all(s.job_id for b in (doomed_batch, kept_batch) for s in b.subs), "the job ids")
    doomed_jobs = [s.job_id for s in doomed_batch.subs]
    kept_jobs = [s.job_id for s in kept_batch.subs]
    assert queued(doomed_jobs) == set(doomed_jobs) and queued(kept_jobs) == set(kept_jobs)

    out = corral("cancel", doomed_batch.store.name, "--dir", workdir)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"cancelled {doomed_batch.store.name}: ")
    assert f"jobs {', '.join(doomed_jobs)} cancelled through slurm" in out.stdout
    wait_until(lambda: not queued(doomed_jobs), "the cancelled batch's jobs to leave the queue")
    assert queued(kept_jobs) == set(kept_jobs)  # the other batch runs on

    # The client watching here sees the calls cancelled, and so does `corral status`.
    with pytest.raises(JobCancelledError):
        list(doomed)
    status = corral("status", doomed_batch.store.name, "--json", "--dir", workdir)
    assert json.loads(status.stdout)["counts"]["cancelled"] == 4, status.stdout
    assert not any(f.done() for f in kept_batch.futures)


def test_clean_older_than_removes_only_old_batches_and_keeps_failed_ones(make_executor, workdir: str) -> None:  # type: ignore[no-untyped-def]
    import json
    import time

    ex = make_executor("slurm", max_retries=0)
    assert list(ex.map(square, range(2))) == [0, 1]
    with pytest.raises(ValueError):
        list(ex.map(shaky, range(3)))
    assert list(ex.map(square, range(3))) == [0, 1, 4]
    listing = json.loads(corral("status", "--json", "--dir", workdir).stdout)
    old, old_failed, new = (b["path"] for b in listing["batches"])
    assert [b["counts"]["failed"] for b in listing["batches"]] == [0, 1, 0]
    for path in (old, old_failed):  # ten days old, as clean reads it: the manifest's creation time
        manifest_path = os.path.join(path, "manifest.json")
        with open(manifest_path) as f:
            manifest = json.load(f)
        manifest["created"] = time.time() - 10 * 86400
        with open(manifest_path, "w") as f:
            json.dump(manifest, f)

    logs = json.loads(corral("logs", os.path.basename(old_failed), "2", "--json", "--dir", workdir).stdout)
    assert (logs["status"], logs["failure"]["type"], logs["stdout"]) == (
        "failed",
        "builtins.ValueError",
        "working on 2\n",
    )
    dry = corral("clean", "--older-than", "7d", "--keep-failed", "--dry-run", "--dir", workdir)
    assert dry.returncode == 0, dry.stderr
    assert all(os.path.isdir(p) for p in (old, old_failed, new))
    out = corral("clean", "--older-than", "7d", "--keep-failed", "--dir", workdir)
    assert out.returncode == 0, out.stderr
    assert f"removed batch {os.path.basename(old)} (" in out.stdout
    assert f"kept batch {os.path.basename(old_failed)}: it has failed calls" in out.stdout
    assert (os.path.exists(old), os.path.isdir(old_failed), os.path.isdir(new)) == (False, True, True)
    out = corral("clean", "--older-than", "1w", "--dir", workdir)
    assert out.returncode == 0 and (os.path.exists(old_failed), os.path.isdir(new)) == (False, True)


def test_doctor_reports_the_clusters_limits_and_a_real_test_jobs_python(workdir: str) -> None:
    import json
    import platform
    import re

    out = corral("doctor", "--json", "--dir", workdir)
    assert out.returncode == 0, out.stdout + out.stderr
    checks = {c["check"]: c for c in json.loads(out.stdout)["checks"]}
    assert checks["backend"]["details"] == {"name": "slurm", "auto": True}
    version = subprocess.run(
        ["sinfo", "--version"], capture_output=True, text=True, timeout=30
    ).stdout.split()[-1]
    assert checks["scheduler"]["details"]["version"] == version
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    max_array = int(re.search(r"^MaxArraySize\s*=\s*(\d+)", config, re.M).group(1))  # type: ignore[union-attr]
    assert checks["limits"]["details"]["max_array_size"] == max_array
    assert "debug" in checks["limits"]["details"]["partitions"]
    job = checks["test job"]
    assert job["status"] == "OK", job
    assert job["details"]["python"] == platform.python_version()  # the node's, from a real job
    assert re.fullmatch(r"n\d+", job["details"]["node"])  # a compute node, as SLURM names it
    text = corral("doctor", "--no-job", "--dir", workdir)
    assert re.search(rf"^OK    limits     MaxArraySize {max_array}, ", text.stdout, re.M), text.stdout
