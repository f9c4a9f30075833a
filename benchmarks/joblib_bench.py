"""joblib's "corral" backend against its baselines, measured in the same run.

    python benchmarks/joblib_bench.py                 # local and slurm (about 2 minutes)
    python benchmarks/joblib_bench.py --skip-slurm    # local only (no cluster needed)

Local: ``Parallel(n_jobs=-1)`` over N trivial tasks under the corral backend (local processes),
with its growing batches and with one task per corral call (``GROWTH`` made huge), against
joblib's loky. SLURM: scikit-learn's ``GridSearchCV`` over 20 parameter settings with cv=5
(100 fits) under the corral backend, against ``n_jobs=1`` in this process, with the sbatch
count (through PATH shims). Needs the test cluster: ``bash scripts/test-cluster.sh start``.
(Not named joblib.py: run as a script, it would shadow joblib itself.)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import joblib  # noqa: E402

import corral.joblib  # noqa: E402, F401 - registers the backend
from benchmarks.shims import CommandLog  # noqa: E402
from corral.frontends import joblib_backend  # noqa: E402


def square(x: int) -> int:
    return x * x


def timed(run: Callable[[], object]) -> float:
    start = time.monotonic()
    run()
    return time.monotonic() - start


def local(n: int, workdir: str) -> None:
    tasks = [joblib.delayed(square)(i) for i in range(n)]
    expected = [i * i for i in range(n)]

    def corral_run() -> None:
        with joblib.parallel_config(backend="corral", scheduler="local", directory=workdir):
            assert joblib.Parallel(n_jobs=-1)(tasks) == expected

    growing = timed(corral_run)
    growth, joblib_backend.GROWTH = joblib_backend.GROWTH, 10**12
    try:
        one_each = timed(corral_run)
    finally:
        joblib_backend.GROWTH = growth
    loky = timed(lambda: joblib.Parallel(n_jobs=-1, backend="loky")(tasks))
    print(
        f"local, {n} trivial tasks: corral {growing:.2f} s, one task per call {one_each:.2f} s, "
        f"loky {loky:.2f} s"
    )


def slurm(workdir: str) -> None:
    from sklearn.datasets import load_iris
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    x, y = load_iris(return_X_y=True)
    grid = {"C": [0.01, 0.1, 1.0, 10.0, 100.0], "gamma": ["scale", 0.01, 0.1, 1.0]}
    alone = timed(lambda: GridSearchCV(SVC(), grid, cv=5, n_jobs=1).fit(x, y))
    log = CommandLog(Path(workdir) / "shims")
    os.environ["PATH"] = log.path

    def spread() -> None:
        with joblib.parallel_config(backend="corral", scheduler="slurm", directory=workdir, time="0:10:00"):
            GridSearchCV(SVC(), grid, cv=5, n_jobs=-1).fit(x, y)

    on_slurm = timed(spread)
    print(
        f"slurm, GridSearchCV 100 fits: corral {on_slurm:.1f} s with {log.counts()['sbatch']} sbatch, "
        f"n_jobs=1 in this process {alone:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--skip-slurm", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as workdir:  # the nodes share the cwd's disk
        local(args.tasks, workdir)
        if not args.skip_slurm:
            slurm(workdir)


if __name__ == "__main__":
    main()
