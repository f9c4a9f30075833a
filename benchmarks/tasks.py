"""``@corral.task`` inside a ``Batch`` against one job per call, measured in the same run.

    python benchmarks/tasks.py                   # local and slurm (about 2 minutes)
    python benchmarks/tasks.py --skip-slurm      # local only (no cluster needed)

Both contenders distribute N trivial calls and wait for every result. corral: inside
``with corral.Batch(max_size=20)``, so that N calls go out as one array of N/20 jobs. The
baseline: the same task distributed once per call outside any batch (the budget lifted),
which is how a tool without batching, or a user who forgot it, loads the scheduler: one job
per call. On SLURM it needs the test cluster (``bash scripts/test-cluster.sh start``); the
command counts of corral's last run come from PATH shims. Figures are medians of --repeat
runs whose contenders alternate.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import corral  # noqa: E402
from benchmarks.overhead import interleaved  # noqa: E402
from benchmarks.shims import CommandLog  # noqa: E402


@corral.task
def square(x: int) -> int:
    return x * x


def batched(backend: str, n: int, workdir: Path) -> float:
    corral.set_defaults(backend=backend, directory=str(workdir))
    start = time.monotonic()
    with corral.Batch(max_size=20) as batch:
        for i in range(n):
            square.distribute(i)
    assert [ref.result(timeout=600) for ref in batch.refs] == [i * i for i in range(n)]
    return time.monotonic() - start


def one_job_per_call(backend: str, n: int, workdir: Path) -> float:
    corral.set_defaults(backend=backend, directory=str(workdir))
    start = time.monotonic()
    refs = [square.distribute(i) for i in range(n)]
    assert [ref.result(timeout=600) for ref in refs] == [i * i for i in range(n)]
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=100, help="calls distributed (default 100)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--skip-slurm", action="store_true")
    args = parser.parse_args()
    corral.set_defaults(submit_budget=0)  # the baseline is the runaway loop the budget stops

    log = CommandLog(Path(tempfile.mkdtemp(prefix="corral-shims-")))
    os.environ["PATH"] = log.path
    header = f"{'case':<44} {'corral s':>9} {'baseline s':>11} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for backend in ["local"] if args.skip_slurm else ["local", "slurm"]:
        n = args.calls
        runs: dict[str, tuple[int, Callable[[Path], float]]] = {
            "corral": (args.repeat, functools.partial(batched, backend, n)),
            "one job per call": (args.repeat, functools.partial(one_job_per_call, backend, n)),
        }
        medians, counts = interleaved(runs, log)
        mine, theirs = medians["corral"], medians["one job per call"]
        commands = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"
        label = f"{backend} {n} tasks: Batch(20) vs one job per call"
        print(f"{label:<44} {mine:>9.2f} {theirs:>11.2f} {mine / theirs:>6.2f}   corral: {commands}")


if __name__ == "__main__":
    main()
