"""``corral attach BATCH [--results] [--json]``: wait for a batch to end, from any shell.

The batch is watched as :func:`corral.attach` watches it (finished calls read, live jobs
watched, lost calls resubmitted as its retry policy allows: only one process should watch a
batch at a time), so this loads the batch's pickles, after the trust checks of
:mod:`corral.trust`. A one-line summary is printed whenever the counts change (at most every
``--interval`` seconds), then a final summary; exit code 4 when calls failed or were cancelled.

``--results`` prints each call's value as one JSON line, in call order, once the batch has
ended: ``{"call": i, "value": v}``, ``{"call": i, "error": "Type: message"}``, or, for a
value that is not JSON as it is (a tuple, NaN, an object), ``{"call": i, "repr": "..."}``.
Then stdout holds those lines alone, and the summaries go to stderr.

``--json`` makes every line JSON (JSON lines, streamed): ``{"event": "progress", ...counts}``
while it waits, the ``--results`` lines if asked, then ``{"event": "end", ...counts, "batch",
"path", "failed_calls"}``. The counts are ``calls``, ``completed``, ``failed``, ``cancelled``,
``running``, ``pending``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
from typing import Any

from ..engine.futures import CorralFuture
from . import codes, jsonout
from .display import printable
from .looking import add_json, one, separator

#: The states a call's future can be in, in display order.
STATES = ("completed", "failed", "cancelled", "running", "pending")


def add_command(commands: Any, shared: argparse.ArgumentParser) -> None:
    """Add ``corral attach`` to the command's subparsers."""
    attach = commands.add_parser(
        "attach", parents=[shared], help="wait for a batch to end, printing how it goes",
        description="Watch a batch until every call has ended (as corral.attach does), printing a line "
        "when its counts change and a summary at the end. Exit code 4 when calls failed.",
    )  # fmt: skip
    attach.add_argument("batch", metavar="BATCH", help="a batch name, unique prefix, or path")
    attach.add_argument("--results", action="store_true", help="print each call's value as a JSON line")
    attach.add_argument(
        "--interval", type=float, default=2.0, metavar="S", help="seconds between looks (default 2)"
    )
    add_json(attach)
    attach.set_defaults(command=attach_command)


def tally(futures: list[CorralFuture]) -> dict[str, int]:
    """How many calls are in each of :data:`STATES` (and ``calls``), from their futures."""
    found = dict.fromkeys(STATES, 0)
    for future in futures:
        if future.cancelled():
            found["cancelled"] += 1
        elif future.done():
            found["failed" if future.exception() is not None else "completed"] += 1
        else:
            found["running" if future.running() else "pending"] += 1
    return {"calls": len(futures), **found}


def attach_command(args: argparse.Namespace) -> int:
    """``corral attach``: wait, print, and exit 4 when calls failed or were cancelled."""
    from ..frontends.attach import attach  # the engine only for this command

    attached = attach(args.batch, directory=args.dir)
    futures = attached.futures
    report = sys.stderr if args.results and not args.json else sys.stdout
    last: dict[str, int] | None = None
    while True:
        counts = tally(futures)
        ended = counts["running"] == counts["pending"] == 0
        if counts != last and not ended:
            _progress(attached.name, counts, args.json, report)
        last = counts
        if ended:
            break
        waiting = [f for f in futures if not f.done()]
        concurrent.futures.wait(waiting, timeout=max(0.1, args.interval), return_when="FIRST_COMPLETED")
    if args.results:
        for call, future in enumerate(futures):
            jsonout.emit(_result_line(call, future))
    failed = [call for call, f in enumerate(futures) if f.cancelled() or f.exception() is not None]
    if args.json:
        jsonout.emit({"event": "end", "batch": attached.name, "path": attached.path, **counts,
                      "failed_calls": failed})  # fmt: skip
    else:
        line = f"{one(attached.name)} ended: {_counts(counts)}"
        if failed:
            line += f"; failed or cancelled calls: {', '.join(map(str, failed[:20]))}"
            line += " ..." if len(failed) > 20 else ""
            line += f" (corral logs {one(attached.name)} CALL)"
        print(printable(line), file=report, flush=True)
    return codes.CALLS_FAILED if failed else codes.OK


def _progress(name: str, counts: dict[str, int], as_json: bool, report: Any) -> None:
    if as_json:
        jsonout.emit({"event": "progress", **counts})
    else:
        print(printable(f"{one(name)}: {_counts(counts)}"), file=report, flush=True)


def _counts(counts: dict[str, int]) -> str:
    """``3/4 ended · 2 completed · 1 failed · 1 running`` (zero counts left out)."""
    ended = counts["completed"] + counts["failed"] + counts["cancelled"]
    shown = [f"{ended}/{counts['calls']} ended"] + [f"{counts[s]} {s}" for s in STATES if counts[s]]
    return separator().join(shown)


def _result_line(call: int, future: CorralFuture) -> dict[str, Any]:
    if future.cancelled():
        return {"call": call, "error": "CancelledError: the call was cancelled before it ran"}
    error = future.exception()
    if error is not None:
        return jsonout.error_line(call, error)
    return jsonout.value_line(call, future.result())
