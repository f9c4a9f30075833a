"""``echo=True`` on the real SLURM test cluster, against its baseline in the same run.

    python -m benchmarks.echo            # about a minute; needs scripts/test-cluster.sh start

Latency: a call prints a line every 0.5 s (the time it printed it); the client records when
each line reached it. With ``echo=True`` the lines come through the engine's tick; the
baseline is a client polling ``future.stdout()`` every 50 ms (what one would write by hand),
both in the same run, alternating. The issue asks for a call's lines on the client's terminal
within 2 s while it runs.

Cost: a map of 200 calls printing 50 lines each, with and without echo (wall time, ratio).
"""

from __future__ import annotations

import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import corral  # noqa: E402

LINES = 10


def ticking(n: int) -> int:
    for _ in range(n):
        print(f"{time.time():.3f}", flush=True)
        time.sleep(0.5)
    return n


def chatty(i: int) -> int:
    for n in range(50):
        print(f"{i}:{n}")
    return i


class Stamped(io.TextIOBase):
    """A stdout that notes when each echoed line arrived: (printed at, arrived at)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, float]] = []

    def write(self, text: str) -> int:
        now = time.time()
        for line in text.splitlines():
            stamp = line.rsplit(" ", 1)[-1]
            try:
                self.seen.append((float(stamp), now))
            except ValueError:
                pass
        return len(text)


def echoed(workdir: str) -> list[float]:
    out, sys.stdout = sys.stdout, Stamped()
    try:
        with corral.Executor("slurm", workdir, echo=True, progress=False, time="5:00") as ex:
            assert ex.submit(ticking, LINES).result() == LINES
        stamped = sys.stdout
    finally:
        sys.stdout = out
    assert isinstance(stamped, Stamped) and len(stamped.seen) == LINES, stamped
    return [arrived - printed for printed, arrived in stamped.seen]


def polled(workdir: str) -> list[float]:
    lags: dict[str, float] = {}
    with corral.Executor("slurm", workdir, progress=False, time="5:00") as ex:
        future = ex.submit(ticking, LINES)
        while not future.done() or len(lags) < LINES:
            now = time.time()
            for line in future.stdout().splitlines():
                lags.setdefault(line, now - float(line))
            time.sleep(0.05)
    return list(lags.values())


def mapped(workdir: str, echo: bool) -> float:
    start = time.monotonic()
    out, sys.stdout = sys.stdout, io.StringIO()
    try:
        with corral.Executor("slurm", workdir, echo=echo, progress=False, time="5:00") as ex:
            assert list(ex.map(chatty, range(200))) == list(range(200))
        lines = sys.stdout.getvalue().count("\n")
    finally:
        sys.stdout = out
    assert lines == (200 * 50 if echo else 0), lines
    return time.monotonic() - start


def main() -> None:
    with tempfile.TemporaryDirectory(dir=Path.home()) as root:
        echo_lags: list[float] = []
        poll_lags: list[float] = []
        for round_ in range(2):
            echo_lags += echoed(f"{root}/e{round_}")
            poll_lags += polled(f"{root}/p{round_}")
        e, p = statistics.median(echo_lags), statistics.median(poll_lags)
        print(
            f"latency, median of {len(echo_lags)} lines: echo {e:.2f} s (max {max(echo_lags):.2f} s), "
            f"stdout() polled each 50 ms {p:.2f} s (max {max(poll_lags):.2f} s): ratio {e / p:.2f}"
        )
        with_, without = [], []
        for round_ in range(2):
            with_.append(mapped(f"{root}/m{round_}", True))
            without.append(mapped(f"{root}/n{round_}", False))
        w, n = statistics.median(with_), statistics.median(without)
        print(f"map of 200 calls x 50 lines: echo {w:.2f} s, without {n:.2f} s: ratio {w / n:.2f}")


if __name__ == "__main__":
    main()
