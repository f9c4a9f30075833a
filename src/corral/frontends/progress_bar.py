"""The progress bar of ``map``, ``Pool.map``/``imap``, ``corral.as_completed`` and
``corral status --watch``: a tqdm bar with the counts by state that a batch has and a
pool of processes has not::

    f  41%|███▋     | 412/1000 [00:31<00:44, 13.2 calls/s, 409 done · 8 running · 579 pending · 3 failed]

The bar counts ended calls (done, failed or cancelled); tqdm gives the rate and the ETA.

It is drawn where someone looks: on a terminal (stderr is a TTY) or in a notebook, unless
``progress=False``; ``progress=True`` draws it anywhere. Without a terminal, and unless
``progress=False``, the same line goes to the ``corral`` log every 30 s, so that a batch job
running a driver script leaves a trace in its log.

Nothing here polls: the bar is redrawn by the thread that waits for results (see
:meth:`ProgressBar.wait`), from counts the engine keeps anyway (:mod:`corral.engine.tally`).
"""

from __future__ import annotations

import concurrent.futures
import logging
import sys
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar

from ..engine.futures import CorralFuture
from ..engine.ledger_values import Counts
from ..engine.tally import Tally, added, ended

logger = logging.getLogger("corral.progress")

#: Seconds between two redraws while a result is awaited.
REDRAW = 0.25
#: Without a terminal, the line goes to the log this often (seconds).
LOG_EVERY = 30.0
#: How the bar looks (tqdm's format; ``postfix`` is ", " and :func:`describe`'s line).
BAR_FORMAT = (
    "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
)

Future = concurrent.futures.Future[Any]
R = TypeVar("R")


def describe(counts: Counts) -> str:
    """``409 done · 8 running · 579 pending · 1 failed · 2 retried``: the counts beside the
    bar (which counts every call that ended); failed, cancelled and retried only when some."""
    rare = [(counts.failed, "failed"), (counts.cancelled, "cancelled"), (counts.retried, "retried")]
    parts = [f"{counts.done} done", f"{counts.running} running", f"{counts.pending} pending"]
    return " · ".join(parts + [f"{n} {word}" for n, word in rare if n])


def summary(counts: Counts, total: int) -> str:
    """``412/1000 ended: 409 done · 8 running · ...``: the whole view as one line of text."""
    return f"{ended(counts)}/{total} ended: {describe(counts)}"


def echo_line(call: int, stream: str, line: str) -> None:
    """Show a line call ``call`` printed (``echo=True``): ``[call 3] text`` on this process's
    stdout or stderr, as the call printed it, above the progress bar if one is drawn."""
    from tqdm import tqdm

    tqdm.write(f"[call {call}] {line}", file=sys.stdout if stream == "out" else sys.stderr)


def wanted(progress: bool | None) -> bool:
    """Whether a bar is drawn: ``progress`` if given, else when someone looks (a terminal on
    stderr, or a notebook)."""
    if progress is not None:
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be True, False or None, not {progress!r}")
        return progress
    return _looking()


def check_showing(progress: bool | None, echo: bool) -> None:
    """A front-end's ``progress`` and ``echo``, checked when it is made (a TypeError then,
    not at the first map)."""
    wanted(progress)
    if not isinstance(echo, bool):
        raise TypeError(f"echo must be True or False, not {echo!r}")


def _looking() -> bool:
    try:
        if sys.stderr is not None and sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return False
    shell = sys.modules.get("IPython")
    get_ipython = getattr(shell, "get_ipython", None)
    kernel = get_ipython() if get_ipython is not None else None
    return kernel is not None and "IPKernelApp" in getattr(kernel, "config", {})


class ProgressBar:
    """A bar for ``total`` calls whose counts ``count()`` gives, redrawn by :meth:`wait`
    and :meth:`wait_any` while they wait, and for good by :meth:`close`.

    ``progress``: True, False, or None (see the module docstring); ``line``: which of several
    bars drawn at once this is (0: the first); ``text``: the words beside the bar (a sweep's
    say more than :func:`describe`); ``unit``: what is counted, in the rate."""

    def __init__(
        self, label: str, total: int, count: Callable[[], Counts], progress: bool | None, *, line: int = 0,
        text: Callable[[Counts], str] = describe, unit: str = "calls",
    ) -> None:  # fmt: skip
        self.label = label
        self._text = text
        self.total = total
        self._count = count
        self._drawn = wanted(progress)
        self._logged = progress is None and not self._drawn  # only the log line, now and then
        self._pause = REDRAW if self._drawn else 1.0  # how long a wait lasts between two looks
        self._last = 0.0
        self._start = time.monotonic()
        self._closed = False
        self._bar: Any = None
        if self._drawn:
            from tqdm.auto import tqdm  # on a terminal or in a notebook, whichever this is

            first = count()  # what ended before the bar was drawn is not in its rate
            self._bar = tqdm(
                total=total, initial=ended(first), desc=label, unit=f" {unit}", file=sys.stderr,
                dynamic_ncols=True, bar_format=BAR_FORMAT, mininterval=REDRAW, postfix=text(first),
                position=line,
            )  # fmt: skip
        if self._logged:
            self._last = self._start  # the first log line after LOG_EVERY, not at once

    @property
    def drawn(self) -> bool:
        """Whether the bar is drawn (else at most logged)."""
        return self._drawn

    @property
    def active(self) -> bool:
        """Whether waiting should stop now and then to redraw (or log)."""
        return (self._drawn or self._logged) and not self._closed

    def refresh(self, *, now: bool = False) -> Counts | None:
        """Redraw with the counts of now (at most every REDRAW seconds, the log line every
        LOG_EVERY, unless ``now``); the counts, when they were read."""
        at = time.monotonic()
        if not self.active or (not now and at - self._last < (REDRAW if self._drawn else LOG_EVERY)):
            return None
        self._last = at
        counts = self._count()
        self._show(counts)
        return counts

    def _show(self, counts: Counts) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self._text(counts), refresh=False)  # drawn with the new n
            self._bar.update(ended(counts) - self._bar.n)  # through update: tqdm's rate sees it
            self._bar.refresh()
        else:
            logger.info("%s: %d/%d ended: %s", self.label, ended(counts), self.total, self._text(counts))

    def wait_until(self, look: Callable[[float], R], timeout: float | None) -> R:
        """Wait in slices, redrawing between them: ``look(seconds)`` waits at most that long
        and returns what it waited for, or something false; until it returns something true,
        or ``timeout`` seconds passed (then its last answer)."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            self.refresh()
            left = self._pause if end is None else min(self._pause, end - time.monotonic())
            found = look(max(left, 0.0))
            if found or left <= 0:
                return found

    def wait(self, future: Future, timeout: float | None) -> None:
        """Wait until ``future`` is done, or ``timeout`` seconds, redrawing meanwhile."""
        self.wait_until(lambda seconds: concurrent.futures.wait([future], timeout=seconds).done, timeout)

    def wait_any(self, futures: Collection[Future], timeout: float | None) -> set[Future]:
        """The futures of ``futures`` that are done once one is, or ``timeout`` seconds
        passed (then maybe none), redrawing meanwhile."""
        first = concurrent.futures.FIRST_COMPLETED
        return self.wait_until(
            lambda s: concurrent.futures.wait(futures, timeout=s, return_when=first).done, timeout
        )

    def close(self) -> None:
        """Draw the final counts and leave the bar on the screen (once)."""
        if self._closed:
            return
        # The log has the last line only of what it had lines of: a map of seconds adds none.
        logged = self._logged and time.monotonic() - self._start >= LOG_EVERY
        counts = self._count() if (self._drawn or logged) else None
        self._closed = True
        if counts is not None:
            self._show(counts)
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def as_completed(
    fs: Iterable[Future], timeout: float | None = None, *, progress: bool | None = None
) -> Iterator[Future]:
    """``concurrent.futures.as_completed`` with the progress bar: yields each of ``fs`` as it
    ends (those done already first), and raises ``TimeoutError`` when ``timeout`` seconds
    passed with some still running. corral's futures are counted by state (a whole batch from
    its engine's counts), other futures as pending, running or done."""
    futures = list(dict.fromkeys(fs))
    ours = [f for f in futures if isinstance(f, CorralFuture)]
    others = [f for f in futures if not isinstance(f, CorralFuture)]
    tally = Tally(futures=ours)

    def count() -> Counts:
        running = sum(f.running() for f in others)
        failed = sum(f.done() and not f.cancelled() and f.exception() is not None for f in others)
        cancelled = sum(f.cancelled() for f in others)
        done = sum(f.done() for f in others) - failed - cancelled
        plain = Counts(len(others) - running - done - failed - cancelled, running, done, failed, cancelled, 0)
        return added(tally.counts(), plain)

    end = None if timeout is None else time.monotonic() + timeout
    order = {f: i for i, f in enumerate(futures)}
    pending = set(futures)
    label = next((str(getattr(f.bound_source, "name", "")) for f in ours if f.bound_source), "") or "calls"
    with ProgressBar(label, len(futures), count, progress) as bar:
        while pending:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"{len(pending)} (of {len(futures)}) futures unfinished")
            if bar.active:
                done = bar.wait_any(pending, left)
            else:
                done, _ = concurrent.futures.wait(pending, timeout=left, return_when="FIRST_COMPLETED")
            for future in sorted(done, key=order.__getitem__):
                pending.discard(future)
                yield future
