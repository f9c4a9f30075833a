"""Overhead of corral on a real SLURM cluster, against baselines measured in the same run.

    python benchmarks/overhead.py                 # the full run (the raw 1000-element array
                                                  # alone takes about 4-5 minutes)
    python benchmarks/overhead.py --sizes 1,100 --sleep-calls 0   # a quick look

For N trivial calls (x -> x*x) it times:

* corral: ``Executor("slurm").map`` with default settings (``submit`` for N = 1);
* raw array: ``sbatch --array=0-(N-1)``, each element a bare ``python -c`` writing its result
  to a file (for N = 1, a plain single job), finished when all N files exist;
* packed floor: one job computing all N results in one ``python -c``.

Then M calls that each sleep S seconds through corral, against the ideal M x S / slots.
Every figure is the median of --repeat runs; completion of the baselines is detected by
listing their output folder every 20 ms (corral's own shortest listing interval). Scheduler
commands are counted with PATH shims (benchmarks/shims.py). Needs the test cluster:
``bash scripts/test-cluster.sh start``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import corral  # noqa: E402
from benchmarks.shims import CommandLog  # noqa: E402

POLL = 0.02


def square(x: int) -> int:
    return x * x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def wait_idle(timeout: float = 600) -> None:
    """Start each measurement on an empty queue."""
    deadline = time.monotonic() + timeout
    while subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.strip():
        if time.monotonic() > deadline:
            raise SystemExit("the queue did not empty; is something else running on the test cluster?")
        time.sleep(0.5)


def wait_files(folder: Path, count: int, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while sum(1 for name in os.listdir(folder) if name.endswith(".out")) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"baseline did not finish: {folder}")
        time.sleep(POLL)


def sbatch(script: str, workdir: Path, array: str | None) -> None:
    path = workdir / "job.sh"
    path.write_text(script)
    argv = ["sbatch", "--parsable", "--output=/dev/null", f"--chdir={workdir}"]
    argv += [f"--array={array}"] if array else []
    subprocess.run([*argv, str(path)], check=True, capture_output=True)


def raw_array(n: int, workdir: Path) -> float:
    """N elements, each a bare interpreter writing one result file."""
    out = workdir / "out"
    out.mkdir()
    code = (
        "import os,sys; i=int(sys.argv[1]); t=f'{i}.tmp'; "
        "open(t,'w').write(str(i*i)); os.rename(t, f'{i}.out')"
    )
    index = '"$SLURM_ARRAY_TASK_ID"' if n > 1 else "0"
    script = (
        f"#!/bin/bash\ncd {shlex.quote(str(out))}\nexec {sys.executable} -c {shlex.quote(code)} {index}\n"
    )
    start = time.monotonic()
    sbatch(script, workdir, f"0-{n - 1}" if n > 1 else None)
    wait_files(out, n)
    return time.monotonic() - start


def packed_floor(n: int, workdir: Path) -> float:
    """One job computing all N results."""
    out = workdir / "out"
    out.mkdir()
    code = (
        f"import os; open('all.tmp','w').write(repr([i*i for i in range({n})])); "
        "os.rename('all.tmp', 'all.out')"
    )
    script = f"#!/bin/bash\ncd {shlex.quote(str(out))}\nexec {sys.executable} -c {shlex.quote(code)}\n"
    start = time.monotonic()
    sbatch(script, workdir, None)
    wait_files(out, 1)
    return time.monotonic() - start


def through_corral(n: int, workdir: Path) -> float:
    with corral.Executor("slurm", directory=str(workdir)) as executor:
        start = time.monotonic()
        if n == 1:
            assert executor.submit(square, 7).result() == 49
        else:
            assert list(executor.map(square, range(n))) == [x * x for x in range(n)]
        return time.monotonic() - start


def sleeping_through_corral(m: int, seconds: float, workdir: Path) -> float:
    with corral.Executor("slurm", directory=str(workdir)) as executor:
        start = time.monotonic()
        assert list(executor.map(nap, [seconds] * m)) == [seconds] * m
        return time.monotonic() - start


#: Every run's files stay until the end: deleting thousands of files between runs keeps the
#: disk busy (TRIM on a `discard` mount) during the next contender's run.
SCRATCH = Path(tempfile.mkdtemp(prefix="corral-bench-", dir=os.getcwd()))


def measure(run: Callable[[Path], float], log: CommandLog | None = None) -> tuple[float, dict[str, int]]:
    """One timed run on an empty queue, with the scheduler commands it made."""
    wait_idle()
    if log is not None:
        log.reset()
    seconds = run(Path(tempfile.mkdtemp(dir=SCRATCH)))
    return seconds, dict(log.counts()) if log is not None else {}


def interleaved(
    runs: dict[str, tuple[int, Callable[[Path], float]]], log: CommandLog
) -> tuple[dict[str, float], dict[str, int]]:
    """Median seconds per contender (name -> (rounds, run)); contenders alternate within each
    round, so that the scheduler's drift hits them alike. Also corral's last command counts."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    counts: dict[str, int] = {}
    for round_ in range(max(rounds for rounds, _ in runs.values())):
        for name, (rounds, run) in runs.items():
            if round_ < rounds:
                seconds, made = measure(run, log if name == "corral" else None)
                times[name].append(seconds)
                counts = made or counts
    return {name: statistics.median(values) for name, values in times.items()}, counts


def slots() -> int:
    out = subprocess.run(["sinfo", "-h", "-o", "%C"], capture_output=True, text=True, check=True).stdout
    allocated, idle, _, _ = (int(v) for v in out.split()[0].split("/"))
    return allocated + idle


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1,100,1000", help="trivial-call counts (default 1,100,1000)")
    parser.add_argument("--sleep-calls", type=int, default=1000, help="calls that sleep (0: skip)")
    parser.add_argument("--sleep", type=float, default=0.5, help="seconds each of them sleeps")
    parser.add_argument("--repeat", type=int, default=7, help="runs per figure (median)")
    parser.add_argument(
        "--raw-repeat-above", type=int, default=100, help="run raw arrays larger than this once"
    )
    args = parser.parse_args()

    log = CommandLog(Path(tempfile.mkdtemp(prefix="corral-shims-")))
    os.environ["PATH"] = log.path
    print(
        f"corral {corral.__version__}, Python {sys.version.split()[0]}, {slots()} slots on the test cluster"
    )
    print()
    header = (
        f"{'N':>5} {'corral s':>9} {'raw s':>8} {'floor s':>8} {'/raw':>6} {'/floor':>7}   corral's commands"
    )
    print(header)
    print("-" * len(header))
    for n in (int(s) for s in args.sizes.split(",")):
        medians, counts = interleaved(
            {
                "corral": (args.repeat, lambda d, n=n: through_corral(n, d)),
                "raw": (1 if n > args.raw_repeat_above else args.repeat, lambda d, n=n: raw_array(n, d)),
                "floor": (args.repeat, lambda d, n=n: packed_floor(n, d)),
            },
            log,
        )
        mine, raw, floor = medians["corral"], medians["raw"], medians["floor"]
        commands = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        ratios = f"{mine / raw:>6.2f} {mine / floor:>7.2f}"
        print(f"{n:>5} {mine:>9.2f} {raw:>8.2f} {floor:>8.2f} {ratios}   {commands}")
    if args.sleep_calls:
        m, s = args.sleep_calls, args.sleep
        ideal = m * s / slots()
        mine, counts = measure(lambda d: sleeping_through_corral(m, s, d), log)
        commands = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        print()
        print(f"{m} calls x {s} s sleep: corral {mine:.2f} s, ideal {ideal:.2f} s", end=" ")
        print(f"({m} x {s} / {slots()} slots), ratio {mine / ideal:.3f}")
        print(f"  corral's commands: {commands}")
    print()
    print(
        "targets: N=1 /raw <= 1.10; N=1000 /floor <= 2.0; sleep ratio <= 1.15; squeue once per poll interval"
    )
    shutil.rmtree(SCRATCH)


if __name__ == "__main__":
    main()
