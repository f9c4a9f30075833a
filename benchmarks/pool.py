"""corral.Pool against its baselines, measured in the same run, as ratios.

    python benchmarks/pool.py                       # local and slurm (about 5 minutes)
    python benchmarks/pool.py --skip-slurm          # local only (no cluster needed)

Local: ``corral.Pool(backend="local").map`` against ``multiprocessing.Pool().map``, pool
start-up included on both sides, for N trivial calls and for M calls that sleep S seconds.

SLURM: ``corral.Pool(backend="slurm").map`` against the raw array (``sbatch --array``, each
element a bare interpreter writing its result file, see overhead.py), for N trivial calls and
for M calls that sleep S seconds (the raw array's elements then sleep too). Needs the test
cluster: ``bash scripts/test-cluster.sh start``. Figures are medians of --repeat runs whose
contenders alternate.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import corral  # noqa: E402
from benchmarks.overhead import interleaved, nap, raw_array, sbatch, slots, square, wait_files  # noqa: E402
from benchmarks.shims import CommandLog  # noqa: E402


def corral_map(backend: str, fn: Callable[[float], float], args: list[float], workdir: Path) -> float:
    start = time.monotonic()
    with corral.Pool(backend=backend, directory=str(workdir)) as pool:
        assert pool.map(fn, args) == [fn(a) if fn is square else a for a in args]
    return time.monotonic() - start


def multiprocessing_map(fn: Callable[[float], float], args: list[float]) -> float:
    start = time.monotonic()
    with multiprocessing.Pool() as pool:
        pool.map(fn, args)
    return time.monotonic() - start


def raw_sleeping_array(n: int, seconds: float, workdir: Path) -> float:
    """N elements, each a bare interpreter that sleeps, then writes its result file."""
    out = workdir / "out"
    out.mkdir()
    code = (
        f"import os,sys,time; time.sleep({seconds}); i=int(sys.argv[1]); t=f'{{i}}.tmp'; "
        "open(t,'w').write(str(i)); os.rename(t, f'{i}.out')"
    )
    run = f'exec {sys.executable} -c {shlex.quote(code)} "$SLURM_ARRAY_TASK_ID"'
    script = f"#!/bin/bash\ncd {shlex.quote(str(out))}\n{run}\n"
    start = time.monotonic()
    sbatch(script, workdir, f"0-{n - 1}")
    wait_files(out, n)
    return time.monotonic() - start


def local_rounds(repeat: int, fn: Callable[[float], float], args: list[float]) -> tuple[float, float]:
    mine, theirs = [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as scratch:
            mine.append(corral_map("local", fn, args, Path(scratch)))
        theirs.append(multiprocessing_map(fn, args))
    return statistics.median(mine), statistics.median(theirs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=1000, help="trivial calls (default 1000)")
    parser.add_argument("--slurm-calls", type=int, default=200, help="trivial calls on slurm (default 200)")
    parser.add_argument("--sleep-calls", type=int, default=64, help="calls that sleep (default 64)")
    parser.add_argument("--sleep", type=float, default=0.5, help="seconds each of them sleeps")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--skip-slurm", action="store_true")
    args = parser.parse_args()

    cpus = multiprocessing.cpu_count()
    print(f"corral {corral.__version__}, Python {sys.version.split()[0]}, {cpus} CPUs here")
    header = f"{'case':<36} {'corral s':>9} {'baseline s':>11} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    trivial = [float(x) for x in range(args.calls)]
    sleepy = [args.sleep] * args.sleep_calls
    for label, fn, calls in (
        (f"local {args.calls} trivial vs multiprocessing", square, trivial),
        (f"local {args.sleep_calls} x {args.sleep} s vs multiprocessing", nap, sleepy),
    ):
        mine, theirs = local_rounds(args.repeat, fn, calls)  # type: ignore[arg-type]
        print(f"{label:<36} {mine:>9.2f} {theirs:>11.2f} {mine / theirs:>6.2f}")
    if args.skip_slurm:
        return

    log = CommandLog(Path(tempfile.mkdtemp(prefix="corral-shims-")))
    os.environ["PATH"] = log.path
    n, m = args.slurm_calls, args.sleep_calls
    cases = {
        f"slurm {n} trivial vs raw array": {
            "corral": (args.repeat, lambda d: corral_map("slurm", square, [float(x) for x in range(n)], d)),  # type: ignore[arg-type]
            "raw": (args.repeat, lambda d: raw_array(n, d)),
        },
        f"slurm {m} x {args.sleep} s vs raw array": {
            "corral": (args.repeat, lambda d: corral_map("slurm", nap, sleepy, d)),
            "raw": (args.repeat, lambda d: raw_sleeping_array(m, args.sleep, d)),
        },
    }
    for label, runs in cases.items():
        medians, counts = interleaved(runs, log)
        mine, raw = medians["corral"], medians["raw"]
        commands = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        print(f"{label:<36} {mine:>9.2f} {raw:>11.2f} {mine / raw:>6.2f}   corral: {commands}")
    print(f"({slots()} slots on the test cluster)")


if __name__ == "__main__":
    main()
