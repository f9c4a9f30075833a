"""``corral status [BATCH]`` and ``corral logs BATCH CALL``: how batches stand, what a call printed.

Both read the files only (:mod:`corral.store.records`), never a pickle, and ask no
scheduler. ``_status`` is one pass over the work dir with no state kept between calls, so a
display that redraws it (``status --watch``) may simply call it again. With ``--json`` each
prints one document (see :mod:`.jsonout`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from ..errors import CorralError
from ..store import records
from ..store.records import BatchSummary, CallLogs, CallStatus
from . import jsonout
from .display import printable

#: How many lines of an element's stderr `corral logs` shows (its end).
_ELEMENT_LINES = 40


def add_commands(commands: Any, shared: argparse.ArgumentParser) -> None:
    """Add ``corral status`` and ``corral logs`` to the command's subparsers."""
    status = commands.add_parser(
        "status", parents=[shared], help="how the batches, or one batch, stand",
        description="Without BATCH, one line per batch in the work dir; with BATCH, its counts, "
        "job ids and failed calls.",
    )  # fmt: skip
    status.add_argument("batch", nargs="?", metavar="BATCH", help="a batch name, unique prefix, or path")
    status.add_argument(
        "--watch", nargs="?", const=2.0, type=float, metavar="SECONDS",
        help="redraw the batch's progress bar (without BATCH: every batch with calls not ended) "
        "every SECONDS (default 2) until its calls ended",
    )  # fmt: skip
    add_json(status)
    status.set_defaults(command=status_command)

    logs = commands.add_parser(
        "logs", parents=[shared], help="a call's stdout, stderr and traceback",
        description="The call's own stdout and stderr, and why it failed if it did.",
    )  # fmt: skip
    logs.add_argument("batch", metavar="BATCH", help="a batch name, unique prefix, or path")
    logs.add_argument("call", metavar="CALL", type=int, help="the call's index in the batch, from 0")
    logs.add_argument("--attempt", type=int, metavar="N", help="which attempt, from 0 (default: the latest)")
    only = logs.add_mutually_exclusive_group()
    only.add_argument("--out", action="store_true", help="print only the call's stdout, as it is")
    only.add_argument("--err", action="store_true", help="print only the call's stderr, as it is")
    add_json(only)
    logs.set_defaults(command=logs_command)


def add_json(parser: Any) -> None:
    """The ``--json`` option of a read command."""
    parser.add_argument("--json", action="store_true", help="print JSON (stable keys: see docs/cli.md)")


# -- corral status ------------------------------------------------------------------------------


def status_command(args: argparse.Namespace) -> int:
    """``corral status [BATCH] [--json]``: every batch in one table, or one batch in detail;
    ``--watch``: progress bars until the calls ended (:mod:`.watching`)."""
    if getattr(args, "watch", None) is not None:
        from .watching import watch

        if args.watch <= 0:
            raise CorralError(f"--watch takes a number of seconds above 0, not {args.watch}")
        return watch(args.batch, args.dir, args.watch)
    as_json = getattr(args, "json", False)
    if args.batch is not None:
        summary = records.summarize(records.find_batch(args.batch, args.dir))
        if as_json:
            jsonout.emit(jsonout.batch(summary, detail=True))
        else:
            show_batch(summary)
        return 0
    root = records.work_root(args.dir)
    paths = records.list_batches(root)
    if as_json:
        jsonout.emit({"work_dir": root, "batches": [_listed(path) for path in paths]})
        return 0
    if not paths:
        say(f"no batches in {one(root)}")
        return 0
    say(f"{len(paths)} batch{'es' if len(paths) > 1 else ''} in {one(root)}")
    rows = [("BATCH", "FUNCTION", "BACKEND", "CREATED", "CALLS")]
    for path in paths:
        try:
            s = records.summarize(path)
        except (CorralError, OSError) as exc:  # one broken folder must not hide the others
            rows.append((one(os.path.basename(path)), "?", "?", "?", f"unreadable: {one(str(exc))}"))
            continue
        rows.append((one(s.name), one(s.function), one(s.backend), when(s.created), counts(s.counts)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        say("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4])
    return 0


def _listed(path: str) -> dict[str, Any]:
    try:
        return jsonout.batch(records.summarize(path))
    except (CorralError, OSError) as exc:  # one broken folder must not hide the others
        return jsonout.unreadable(os.path.basename(path), path, str(exc))


def show_batch(s: BatchSummary) -> None:
    """``corral status BATCH``: the batch's fields, its lost calls and its failures."""
    fields = [
        ("batch", s.name),
        ("folder", s.path),
        ("function", s.function),
        ("backend", s.backend),
        ("created", when(s.created)),
        ("calls", f"{s.calls}: {counts(s.counts)}"),
        ("jobs", ", ".join(s.job_ids) or "none submitted yet"),
    ]
    for label, value in fields:
        say(f"{label:<9} {one(value)}")
    if s.counts[CallStatus.RUNNING]:
        say("          (running: started; the scheduler is not asked whether their jobs still run)")
    lost = [call for call, status in enumerate(s.statuses) if status is CallStatus.LOST]
    if lost:
        say(f"lost calls: {records.listing(map(str, lost))}")
        say("          (started on this machine; their processes are gone and left no outcome)")
    if s.failures:
        say("failed calls:")
        width = len(str(s.failures[-1].call))
        for f in s.failures:
            again = f" (attempt {f.attempt})" if f.attempt else ""
            why = f"{one(short(f.type_name))}: {one(first_line(f.message))}"
            say(f"  call {f.call:>{width}}{again}  {why}")


def counts(found: dict[CallStatus, int]) -> str:
    """``12 completed · 1 failed · 3 running · 0 pending`` (cancelled and lost only when
    there are some)."""
    rare = (CallStatus.CANCELLED, CallStatus.LOST)
    shown = [f"{n} {status.value}" for status, n in found.items() if n or status not in rare]
    return separator().join(shown)


# -- corral logs --------------------------------------------------------------------------------


def logs_command(args: argparse.Namespace) -> int:
    """``corral logs BATCH CALL``: the call's output, and why it failed."""
    logs = records.call_logs(records.find_batch(args.batch, args.dir), args.call, args.attempt)
    if getattr(args, "json", False):
        jsonout.emit(jsonout.logs(logs))
        return 0
    if args.out or args.err:  # the stream alone, for pipes and files (the file has every byte)
        sys.stdout.write(printable(logs.stdout if args.out else logs.stderr))
        sys.stdout.flush()
        return 0
    # Attempts count from 0 here, as in the file names the headers show.
    say(f"call {logs.call} of {one(logs.batch)}, attempt {logs.attempt}: {logs.status.value}")
    streams = [("stdout", logs.stdout_path, logs.stdout), ("stderr", logs.stderr_path, logs.stderr)]
    for title, path, text in streams:
        say(f"== {title} ({one(path)}) ==")
        say(text.rstrip("\n") if text else "(empty)")
    if logs.element_stderr.strip():
        _show_element(logs)
    if logs.traceback:
        say("== traceback ==")
        if logs.traceback.strip() in logs.stderr:  # the worker also writes it to the call's stderr
            say("(the end of stderr, above)")
        else:
            say(logs.traceback.rstrip("\n"))
    elif logs.failure is not None:
        say("== failure ==")
        say(f"{short(logs.failure.type_name)}: {logs.failure.message}")
    elif logs.status is CallStatus.LOST:
        say("== lost ==")
        say("it started on this machine, and its process is gone without leaving an outcome")
    return 0


def _show_element(logs: CallLogs) -> None:
    """The end of the stderr of the element that ran the call: where an error outside the
    call (the node could not import the function's module, the process exited hard) is."""
    lines = logs.element_stderr.rstrip("\n").splitlines()
    shown = f"last {_ELEMENT_LINES} of {len(lines)} lines, " if len(lines) > _ELEMENT_LINES else ""
    why = "the call has no outcome" if logs.stderr else "the call has no stderr of its own"
    where = one(logs.element_stderr_path)
    say(f"== stderr of {logs.element}, the array element of this call ({shown}{where}) ==")
    say(f"({why}; an element may run several calls)")
    say("\n".join(lines[-_ELEMENT_LINES:]))


# -- helpers, shared by the commands ------------------------------------------------------------


def say(text: str) -> None:
    """Print one piece of output; whatever came from the work dir in it is made harmless."""
    print(printable(text), flush=True)


def one(value: str) -> str:
    """A value shown on one line (a name, a table cell): it cannot start another."""
    return printable(value, multiline=False)


def when(created: float) -> str:
    """A time for people, ``2026-11-21 14:03:12``; ``?`` for none."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)) if created else "?"
    except (OverflowError, OSError, ValueError):  # a time no calendar of this machine can show
        return "?"


def short(type_name: str) -> str:
    """``builtins.ValueError`` -> ``ValueError``; other modules stay, they say where it is from."""
    return type_name.removeprefix("builtins.")


def first_line(message: str) -> str:
    """A message's first line, ``...`` when there are more."""
    lines = message.strip().splitlines()
    return lines[0] + (" ..." if len(lines) > 1 else "") if lines else "(no message)"


def separator() -> str:
    """`` · `` where the terminal can show it, else ``, ``."""
    try:
        " · ".encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return ", "
    return " · "
