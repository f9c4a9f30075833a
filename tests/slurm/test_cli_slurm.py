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
