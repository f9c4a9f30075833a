"""The scale of corral's engine: issue 12's "Targets" table, each figure beside a baseline
measured in the same run.

    python benchmarks/scale.py                     # every case at its default sizes (~15 min)
    python benchmarks/scale.py --quick             # every case, small and once (~3 min)
    python benchmarks/scale.py --cases local-map,transport-ops --sizes 10,1000
    python benchmarks/scale.py --cases slurm-map --sizes 100000 --repeat 1

Cases (``--cases`` picks them by name; ``--sizes`` replaces the N of the three sized ones):

slurm-map         ``Executor("slurm").map(square, range(N))``, N = 10, 1000, 100000, against
                  the packed floor (one job computing all N in one ``python -c``, as in
                  overhead.py): wall, client CPU, peak RSS, files left in the work dir per
                  call, and scheduler commands by name (PATH shims, see shims.py).
transport-ops     the client's transport operations in a map of N calls on the local backend
                  (N = 10, 1000, 100000) and on SLURM (N <= --slurm-ops-max), counted by
                  :class:`CountingTransport`. Operations of poll ticks (listings and scans of
                  the work dir, status queries) are shown apart and left out of the target.
submit-loop       ``[ex.submit(square, x) for x in range(1000)]`` + ``as_completed`` on SLURM,
                  against ``ex.map`` of the same calls: wall, sbatch count, and whether the
                  submission budget stopped the loop (and when).
local-map         ``Executor("local").map`` of N trivial calls (N = 10000, 100000) against a
                  forked ``multiprocessing.Pool().map``, both with their set-up and exit.
local-pool-sleep  ``corral.Pool(k)`` with 64 calls of ``time.sleep(0.5)`` against
                  ``multiprocessing.Pool(k)``, k = the CPU count.
quiet-map         M calls of ``time.sleep(S)`` (M = 16, S = 60), 8 at a time, on SLURM through
                  ``Pool.imap_unordered``: squeue + sacct per minute, and the delay between a
                  call's return (the time it records) and the client holding its result.
progress          one call making 10,000 ``corral.progress()`` records: the client's CPU
                  against the same call without them (skipped while corral.progress is absent).

Every measurement runs in a fresh subprocess of this script (``--child``) that reports its
wall time, CPU seconds (``getrusage(RUSAGE_SELF)`` deltas, user + sys) and peak RSS
(``ru_maxrss``): the client's alone, since workers and scheduler commands are other processes.
Wall times cover the whole ``with`` block (set-up, calls, exit). Figures are medians of
``--repeat`` runs whose contenders alternate; operation counts and quiet-map run once.
``--quick`` runs every case once at small sizes (quiet-map: M = 8, S = 10). The benchmark
asserts nothing: it prints figures and "target met" / "target missed" per row.

The SLURM cases need the test cluster (``bash scripts/test-cluster.sh start``). Before each
of their runs they wait, up to ``--wait`` minutes, until no job is queued and no pytest runs
(someone else using the cluster); past that, the case is skipped and says so.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import corral  # noqa: E402
from benchmarks import overhead  # noqa: E402
from benchmarks.shims import CommandLog  # noqa: E402
from corral.transports.local import LocalTransport  # noqa: E402

PYTEST = "(^|/| )pytest( |$)"  # pgrep's extended regex: a running test suite
STATUS_COMMANDS = {"squeue", "sacct", "qstat", "qacct"}
Result = dict[str, Any]


# -- what the calls run (defined here, so they travel by value to the nodes) ---------------------


def square(x: int) -> int:
    return x * x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def stamp(seconds: float) -> float:
    """Sleep, then say when this call returned (the client measures its delay from this)."""
    time.sleep(seconds)
    return time.time()


def chatty(records: int) -> int:
    for step in range(records):
        corral.progress(step, total=records)  # runs only once corral.progress exists
    return records


def mute(records: int) -> int:
    for _ in range(records):
        pass
    return records


# -- counting transport operations --------------------------------------------------------------


class CountingTransport:
    """A :class:`LocalTransport` whose every method (those of the Transport protocol, and any
    it gains later, such as a batched scan) is forwarded and counted by name.

    Operations a poll tick repeats however many calls there are (listing or scanning the work
    dir, status queries) are also counted in :attr:`tick`.
    """

    def __init__(self) -> None:
        self.inner = LocalTransport()
        self.counts: collections.Counter[str] = collections.Counter()
        self.tick: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def _count(self, method: str, args: tuple[Any, ...]) -> None:
        listing = "scan" in method or "list" in method
        argv = args[0] if method == "run" and args else ()
        status = bool(argv) and os.path.basename(argv[0]) in STATUS_COMMANDS
        with self._lock:
            self.counts[method] += 1
            if listing or status:
                self.tick[method] += 1

    def __getattr__(self, name: str) -> Any:
        # Reached for every method, since this class defines none of the protocol's itself.
        attr = getattr(self.inner, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._count(name, args)
            return attr(*args, **kwargs)

        return counted


# -- the child side: one measurement in a fresh process -----------------------------------------


def files_under(folder: str) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def child_map(p: Result) -> Result:
    n, counting = p["n"], CountingTransport() if p.get("count") else None
    backend = corral.get_backend(p["backend"], transport=counting) if counting else p["backend"]
    start = time.monotonic()
    with corral.Executor(backend, directory=p["dir"]) as executor:
        if list(executor.map(square, range(n))) != [x * x for x in range(n)]:
            raise SystemExit("wrong results")
    out: Result = {"wall": time.monotonic() - start, "files": files_under(p["dir"])}
    if counting is not None:
        out |= {"ops": dict(counting.counts), "tick_ops": sum(counting.tick.values())}
    return out


def child_mp_map(p: Result) -> Result:
    start = time.monotonic()
    with multiprocessing.get_context("fork").Pool(p.get("k")) as pool:
        args = range(p["n"]) if p["fn"] == "square" else [p["seconds"]] * p["n"]
        results = pool.map(square if p["fn"] == "square" else nap, args)
    if p["fn"] == "square" and results != [x * x for x in args]:
        raise SystemExit("wrong results")
    return {"wall": time.monotonic() - start}


def child_pool_sleep(p: Result) -> Result:
    start = time.monotonic()
    with corral.Pool(p["k"], backend="local", directory=p["dir"]) as pool:
        pool.map(nap, [p["seconds"]] * p["n"])
    return {"wall": time.monotonic() - start}


def child_submit_loop(p: Result) -> Result:
    start, stopped, futures = time.monotonic(), -1.0, []
    try:
        with corral.Executor("slurm", directory=p["dir"]) as executor:
            try:
                for x in range(p["n"]):
                    futures.append(executor.submit(square, x))
            except corral.SubmissionBudgetError:
                stopped = time.monotonic() - start
                raise  # out of the with block, which cancels what was submitted
            for future in concurrent.futures.as_completed(futures):
                future.result()
    except corral.SubmissionBudgetError:
        return {"wall": stopped, "budget_error": True, "submitted": len(futures)}
    return {"wall": time.monotonic() - start, "budget_error": False, "submitted": p["n"]}


def child_quiet(p: Result) -> Result:
    delays = []
    start = time.monotonic()
    with corral.Pool(p["at_once"], backend="slurm", directory=p["dir"]) as pool:
        for returned in pool.imap_unordered(stamp, [p["seconds"]] * p["calls"]):
            delays.append(time.time() - returned)
    return {"wall": time.monotonic() - start, "delays": delays}


def child_progress(p: Result) -> Result:
    start = time.monotonic()
    with corral.Executor(p["backend"], directory=p["dir"]) as executor:
        executor.submit(chatty if p["report"] else mute, p["records"]).result()
    return {"wall": time.monotonic() - start}


CHILDREN: dict[str, Callable[[Result], Result]] = {
    "map": child_map,
    "mp-map": child_mp_map,
    "pool-sleep": child_pool_sleep,
    "submit-loop": child_submit_loop,
    "quiet": child_quiet,
    "progress": child_progress,
}


def child_main(spec: str) -> None:
    params: Result = json.loads(spec)
    before = resource.getrusage(resource.RUSAGE_SELF)
    out = CHILDREN[params["run"]](params)
    after = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out["rss_mb"] = after.ru_maxrss / 1024  # KiB on Linux
    print(json.dumps(out))


# -- the parent side -----------------------------------------------------------------------------


class Skip(Exception):
    """The test cluster stayed busy (or is absent): the case is skipped."""


class Failed(Exception):
    """A measurement failed: the case stops, the others run."""


class Bench:
    """What the cases share: options, the command log, the scratch folder."""

    def __init__(self, args: argparse.Namespace, log: CommandLog) -> None:
        self.args, self.log = args, log

    def busy(self) -> str | None:
        """Why the test cluster cannot be used now, or None."""
        if shutil.which("squeue") is None:
            raise Skip("no squeue on PATH")
        queue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True)
        if queue.returncode != 0:
            raise Skip(f"squeue fails ({queue.stderr.strip()}): is the test cluster started?")
        if queue.stdout.strip():
            return f"{len(queue.stdout.split())} job(s) in the queue"
        # pytest itself, not the leftovers of its tests (whose work dirs hold "pytest-of-...")
        found = subprocess.run(["pgrep", "-f", PYTEST], capture_output=True, text=True).stdout.split()
        return f"pytest runs (pid {found[0]})" if found else None

    def wait_cluster(self) -> None:
        deadline = time.monotonic() + self.args.wait * 60
        while (reason := self.busy()) is not None:
            if time.monotonic() > deadline:
                raise Skip(f"the test cluster stayed busy for {self.args.wait:g} min: {reason}")
            time.sleep(30 if "pytest" in reason else 0.5)

    def child(self, run: str, *, slurm: bool = False, **params: Any) -> Result:
        """One measurement in a fresh process; with ``slurm``, on an idle cluster and with the
        scheduler commands it made."""
        if slurm:
            self.wait_cluster()
        self.log.reset()
        params |= {"run": run, "dir": tempfile.mkdtemp(dir=overhead.SCRATCH)}
        argv = [sys.executable, __file__, "--child"]
        try:
            proc = subprocess.run(
                argv, input=json.dumps(params), capture_output=True, text=True, timeout=self.args.timeout * 60
            )
        except subprocess.TimeoutExpired:
            raise Failed(f"{run} {params} took over {self.args.timeout:g} min") from None
        if proc.returncode != 0:
            raise Failed(f"{run} {params} failed:\n{proc.stderr[-3000:]}")
        out: Result = json.loads(proc.stdout.strip().splitlines()[-1])
        out["commands"] = dict(self.log.counts()) if slurm else {}
        out["command_times"] = self.log.calls() if slurm else []
        return out

    def floor(self, n: int) -> Result:
        self.wait_cluster()
        return {"wall": overhead.packed_floor(n, Path(tempfile.mkdtemp(dir=overhead.SCRATCH)))}

    def rounds(self, **contenders: Callable[[], Result]) -> dict[str, Result]:
        """Median figures per contender; contenders alternate within each round, so that drift
        hits them alike. Non-numeric figures are the last run's."""
        runs: dict[str, list[Result]] = {name: [] for name in contenders}
        for _ in range(self.args.repeat):
            for name, run in contenders.items():
                runs[name].append(run())
        return {name: medians(results) for name, results in runs.items()}


def medians(results: list[Result]) -> Result:
    out = dict(results[-1])
    for key, value in out.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = statistics.median(r[key] for r in results)
    return out


def verdict(checks: dict[str, bool]) -> str:
    missed = [name for name, ok in checks.items() if not ok]
    return "target missed: " + ", ".join(missed) if missed else "target met"


def row(*cells: object) -> None:
    """One line of a table: cells right-aligned in columns of 10; floats as given."""
    print(" ".join(f"{cell:>10}" for cell in cells))


def counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "none"


def within(value: float, reference: float, fraction: float) -> bool:
    return abs(value - reference) <= fraction * reference


# -- the cases -----------------------------------------------------------------------------------


def slurm_map(b: Bench) -> None:
    row("N", "corral s", "floor s", "/floor", "CPU s", "RSS MB", "files/call")
    totals: dict[int, int] = {}
    for n in b.args.sizes or ([10, 1000] if b.args.quick else [10, 1000, 100_000]):
        got = b.rounds(
            corral=lambda n=n: b.child("map", slurm=True, backend="slurm", n=n), floor=lambda n=n: b.floor(n)
        )
        mine, floor = got["corral"], got["floor"]["wall"]
        ratio, per_call = mine["wall"] / floor, mine["files"] / n
        totals[n] = sum(mine["commands"].values())
        row(n, f"{mine['wall']:.2f}", f"{floor:.2f}", f"{ratio:.2f}", f"{mine['cpu']:.2f}",
            f"{mine['rss_mb']:.0f}", f"{per_call:.3f}")  # fmt: skip
        checks = {"CPU": mine["cpu"] <= 10, "RSS": mine["rss_mb"] <= 200, "files": per_call <= 0.05}
        print(f"{'':10} {verdict(checks | {'/floor': ratio <= 3})}; {counts_text(mine['commands'])}")
    spread = max(totals.values()) - min(totals.values())
    same = spread <= max(2, 0.2 * min(totals.values()))
    print(f"scheduler commands by N {totals}: {verdict({'independent of N': same})}")
    print("targets: CPU <= 10 s, peak RSS <= 200 MB, <= 0.05 files per call, wall <= 3x the floor")


def transport_ops(b: Bench) -> None:
    sizes = b.args.sizes or ([10, 1000] if b.args.quick else [10, 1000, 100_000])
    row("backend", "N", "ops", "tick ops", "others")
    for name in ("local", "slurm"):
        counted: dict[int, int] = {}
        try:
            for n in sizes if name == "local" else [n for n in sizes if n <= b.args.slurm_ops_max]:
                got = b.child("map", slurm=name == "slurm", backend=name, n=n, count=True)
                total = sum(got["ops"].values())
                counted[n] = total - got["tick_ops"]
                row(name, n, total, got["tick_ops"], counted[n])
                print(f"{'':10} by method: {counts_text(got['ops'])}")
        except Skip as why:
            print(f"{name:>10} skipped: {why}")
        if 1000 in counted:
            checks = {"<= 50 at N=1000": counted[1000] <= 50}
            checks |= {f"+-20 % at N={n}": within(c, counted[1000], 0.2) for n, c in counted.items()}
            print(f"{name:>10} {verdict(checks)}")
    print("target: <= 50 operations for 1000 calls, poll ticks left out; the same +-20 % at N=10, 100,000")


def submit_loop(b: Bench) -> None:
    n = b.args.submit_calls
    got = b.rounds(
        loop=lambda: b.child("submit-loop", slurm=True, n=n),
        map=lambda: b.child("map", slurm=True, backend="slurm", n=n),
    )
    loop, mapped = got["loop"], got["map"]
    sbatch, ratio = loop["commands"].get("sbatch", 0), loop["wall"] / mapped["wall"]
    if loop["budget_error"]:
        print(f"{n} x submit: stopped by SubmissionBudgetError after {loop['wall']:.2f} s and", end=" ")
        print(f"{loop['submitted']} calls; {counts_text(loop['commands'])}")
    else:
        print(f"{n} x submit + as_completed: {loop['wall']:.2f} s; {counts_text(loop['commands'])}")
    print(f"map of the same calls: {mapped['wall']:.2f} s; {counts_text(mapped['commands'])}")
    checks = {"no budget error": not loop["budget_error"], "<= 3 sbatch": sbatch <= 3}
    print(f"ratio {ratio:.2f}: {verdict(checks | {'wall <= 1.5x map': ratio <= 1.5})}")


def local_map(b: Bench) -> None:
    targets = {10_000: 20.0, 100_000: 50.0}
    row("N", "corral s", "mp s", "ratio", "corral us", "mp us", "CPU s")
    for n in b.args.sizes or ([1000, 10_000] if b.args.quick else [10_000, 100_000]):
        got = b.rounds(
            corral=lambda n=n: b.child("map", backend="local", n=n),
            mp=lambda n=n: b.child("mp-map", fn="square", n=n),
        )
        mine, theirs = got["corral"]["wall"], got["mp"]["wall"]
        row(n, f"{mine:.3f}", f"{theirs:.3f}", f"{mine / theirs:.1f}", f"{mine / n * 1e6:.1f}",
            f"{theirs / n * 1e6:.1f}", f"{got['corral']['cpu']:.2f}")  # fmt: skip
        target = targets.get(n)
        print(f"{'':10} {verdict({f'<= {target:g}x': mine / theirs <= target}) if target else 'no target'}")
    print("targets: 10k <= 20x, 100k <= 50x multiprocessing.Pool (forked, creation included); us per call")


def local_pool_sleep(b: Bench) -> None:
    k, calls = os.cpu_count() or 1, 16 if b.args.quick else 64
    got = b.rounds(
        corral=lambda: b.child("pool-sleep", k=k, n=calls, seconds=0.5),
        mp=lambda: b.child("mp-map", fn="nap", k=k, n=calls, seconds=0.5),
    )
    mine, theirs = got["corral"]["wall"], got["mp"]["wall"]
    print(
        f"{calls} x sleep(0.5), {k} processes: corral.Pool {mine:.2f} s, multiprocessing.Pool {theirs:.2f} s"
    )
    print(f"ratio {mine / theirs:.3f}: {verdict({'<= 1.05x': mine / theirs <= 1.05})}")


def quiet_map(b: Bench) -> None:
    calls, seconds = (8, 10.0) if b.args.quick else (b.args.quiet_calls, b.args.quiet_seconds)
    got = b.child("quiet", slurm=True, calls=calls, seconds=seconds, at_once=8)
    ideal = -(-calls // 8) * seconds
    queries = got["commands"].get("squeue", 0) + got["commands"].get("sacct", 0)
    per_minute, delays = queries / (got["wall"] / 60), got["delays"]
    print(
        f"{calls} calls x sleep({seconds:g}), 8 at a time: {got['wall']:.1f} s, ideal {ideal:.0f} s,", end=" "
    )
    print(f"ratio {got['wall'] / ideal:.2f}; {counts_text(got['commands'])}")
    print(f"status queries: {queries}, {per_minute:.2f} per minute")
    times = [when for name, when in got["command_times"] if name in STATUS_COMMANDS]
    first = min((when for _, when in got["command_times"]), default=0.0)  # sbatch and its kind
    print("  asked at (s after the first scheduler command):", " ".join(f"{t - first:.0f}" for t in times))
    print(
        f"from a call's return to its result on the client: median {statistics.median(delays):.2f} s,",
        end=" ",
    )
    print(f"max {max(delays):.2f} s")
    print(verdict({"<= 1 query per 60 s": per_minute <= 1, "seen within 1 s": max(delays) <= 1}))


def progress(b: Bench) -> None:
    if not hasattr(corral, "progress"):
        print("corral.progress: not built yet, skipped")
        return
    records = 10_000
    got = b.rounds(
        chatty=lambda: b.child("progress", backend="local", records=records, report=True),
        mute=lambda: b.child("progress", backend="local", records=records, report=False),
    )
    mine, theirs = got["chatty"]["cpu"], got["mute"]["cpu"]
    print(f"one call, {records} progress records: client CPU {mine:.2f} s, without them {theirs:.2f} s")
    print(f"extra {mine - theirs:.2f} s: {verdict({'<= 1 s CPU': mine - theirs <= 1})}")


RUNS: dict[str, Callable[[Bench], None]] = {
    "slurm-map": slurm_map,
    "transport-ops": transport_ops,
    "submit-loop": submit_loop,
    "local-map": local_map,
    "local-pool-sleep": local_pool_sleep,
    "quiet-map": quiet_map,
    "progress": progress,
}
CASES = tuple(RUNS)


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated, of: " + ", ".join(CASES))
    parser.add_argument(
        "--sizes", default="", help="N for slurm-map, transport-ops and local-map (comma-separated)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per figure (median; default 3, --quick 1)"
    )
    parser.add_argument("--quick", action="store_true", help="every case once, at small sizes")
    parser.add_argument("--slurm-ops-max", type=int, default=1000, help="largest N of transport-ops on SLURM")
    parser.add_argument("--submit-calls", type=int, default=1000, help="calls of submit-loop")
    parser.add_argument("--quiet-calls", type=int, default=16, help="calls of quiet-map (M)")
    parser.add_argument(
        "--quiet-seconds", type=float, default=60, help="seconds each quiet-map call sleeps (S)"
    )
    parser.add_argument("--timeout", type=float, default=30, help="minutes one measurement may take")
    parser.add_argument("--wait", type=float, default=20, help="minutes to wait for an idle test cluster")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # spec on stdin
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.repeat = 1 if args.quick else args.repeat
    unknown = set(args.cases.split(",")) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {', '.join(sorted(unknown))}; choose among {', '.join(CASES)}")
    return args


def main() -> None:
    args = options()
    if args.child:
        overhead.SCRATCH.rmdir()  # made at its import; this process measures in its parent's
        child_main(sys.stdin.read())
        return
    log = CommandLog(Path(tempfile.mkdtemp(prefix="corral-shims-")))
    os.environ["PATH"] = log.path
    print(f"corral {corral.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs,", end=" ")
    print(f"median of {args.repeat} run(s) per figure")
    bench = Bench(args, log)
    try:
        for case in (c for c in CASES if c in args.cases.split(",")):
            print(f"\n== {case}")
            try:
                RUNS[case](bench)
            except Skip as why:
                print(f"skipped: {why}")
            except Failed as why:
                print(f"FAILED: {why}")
    finally:
        shutil.rmtree(overhead.SCRATCH, ignore_errors=True)
        shutil.rmtree(log.folder, ignore_errors=True)


if __name__ == "__main__":
    main()
