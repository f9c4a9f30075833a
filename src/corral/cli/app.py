"""The ``corral`` command: look at batches in the work dir without writing a line of Python.

::

    corral                                     the same as ``corral status``
    corral status [BATCH] [--dir DIR] [--host NAME]    every batch, or one batch in detail
    corral status [BATCH] --watch [SECONDS]            progress bars until the calls ended
    corral logs BATCH CALL [--attempt N] [--out | --err] [--dir DIR] [--host NAME]
    corral sweep status [NAME] [--rows N] [--dir DIR] [--host NAME]   sweeps (see .sweeps)
    corral --version

BATCH is a batch folder's name, a unique prefix of one, or a path. The work dir is ``--dir``,
else the configured ``directory`` (``$CORRAL_DIR``, config files), else ``./.corral``. With
``--host NAME`` (or ``$CORRAL_HOST``) the same command runs on that host (see
:mod:`corral.frontends.hosts`), over the process's one SSH session, with the host's work dir
unless ``--dir`` names another there.
Nothing here asks the scheduler: it reads the files only, and never unpickles (see
:mod:`corral.store.records`). Everything it prints from a work dir goes through
:func:`corral.cli.display.printable`, so no text there can drive the terminal.

Exit codes: 0 done, 1 an error explained on stderr, 2 a usage error, 3 the work dir (or a
batch folder named by path) is not the user's alone, so nothing in it was read.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence

from .. import __version__
from ..errors import CorralError, UnsafeWorkDirError
from ..store import records
from ..store.records import BatchSummary, CallLogs, CallStatus
from .display import printable
from .sweeps import add_commands as add_sweep_commands

#: The exit code when the work dir is refused (see corral.trust).
UNSAFE = 3

#: How many lines of an element's stderr `corral logs` shows (its end).
_ELEMENT_LINES = 40


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``corral`` command with ``argv`` (default ``sys.argv[1:]``); return its exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse exits on usage errors (2) and on --help (0)
        return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    # `corral` alone shows the status, as `git status` is what one types first.
    command: Callable[[argparse.Namespace], int] = getattr(args, "command", _status)
    try:
        if args.host or os.environ.get("CORRAL_HOST", "").strip():
            from .remote import run_on_host  # the SSH machinery only when a host is named

            code = run_on_host(args.host, list(sys.argv[1:] if argv is None else argv), args.dir)
            if code is not None:
                return code
        return command(args)
    except BrokenPipeError:
        # `corral logs ... | head` closed our output: stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        _silence_stdout()
        return 1
    except UnsafeWorkDirError as exc:  # before OSError: it is a PermissionError too
        print(f"corral: error: {printable(str(exc))}", file=sys.stderr)
        return UNSAFE
    except (CorralError, OSError) as exc:
        print(f"corral: error: {printable(str(exc))}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral",
        description="Look at corral batches in the work dir (no scheduler is asked). "
        "Without a command, the same as `corral status`.",
    )
    parser.add_argument("--version", action="version", version=f"corral {__version__}")
    parser.set_defaults(batch=None, dir=None, host=None)  # for `corral` alone: `corral status`
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--dir",
        metavar="DIR",
        help="the work dir (default: the configured directory, $CORRAL_DIR, else ./.corral)",
    )
    shared.add_argument(
        "--host",
        metavar="NAME",
        help="run the command on this configured host, over SSH (default: $CORRAL_HOST)",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

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
    status.set_defaults(command=_status)

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
    logs.set_defaults(command=_logs)
    add_sweep_commands(commands, shared)
    return parser


# -- corral status ------------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    if getattr(args, "watch", None) is not None:
        from .watching import watch

        if args.watch <= 0:
            raise CorralError(f"--watch takes a number of seconds above 0, not {args.watch}")
        return watch(args.batch, args.dir, args.watch)
    if args.batch is not None:
        _show_batch(records.summarize(records.find_batch(args.batch, args.dir)))
        return 0
    root = records.work_root(args.dir)
    paths = records.list_batches(root)
    if not paths:
        _say(f"no batches in {_one(root)}")
        return 0
    _say(f"{len(paths)} batch{'es' if len(paths) > 1 else ''} in {_one(root)}")
    rows = [("BATCH", "FUNCTION", "BACKEND", "CREATED", "CALLS")]
    for path in paths:
        try:
            s = records.summarize(path)
        except (CorralError, OSError) as exc:  # one broken folder must not hide the others
            rows.append((_one(os.path.basename(path)), "?", "?", "?", f"unreadable: {_one(str(exc))}"))
            continue
        rows.append((_one(s.name), _one(s.function), _one(s.backend), _when(s.created), _counts(s.counts)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        _say("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4])
    return 0


def _show_batch(s: BatchSummary) -> None:
    fields = [
        ("batch", s.name),
        ("folder", s.path),
        ("function", s.function),
        ("backend", s.backend),
        ("created", _when(s.created)),
        ("calls", f"{s.calls}: {_counts(s.counts)}"),
        ("jobs", ", ".join(s.job_ids) or "none submitted yet"),
    ]
    for label, value in fields:
        _say(f"{label:<9} {_one(value)}")
    if s.counts[CallStatus.RUNNING]:
        _say("          (running: started; the scheduler is not asked whether their jobs still run)")
    lost = [call for call, status in enumerate(s.statuses) if status is CallStatus.LOST]
    if lost:
        _say(f"lost calls: {records.listing(map(str, lost))}")
        _say("          (started on this machine; their processes are gone and left no outcome)")
    if s.failures:
        _say("failed calls:")
        width = len(str(s.failures[-1].call))
        for f in s.failures:
            again = f" (attempt {f.attempt})" if f.attempt else ""
            why = f"{_one(_short(f.type_name))}: {_one(_first_line(f.message))}"
            _say(f"  call {f.call:>{width}}{again}  {why}")


def _counts(counts: dict[CallStatus, int]) -> str:
    """``12 completed · 1 failed · 3 running · 0 pending`` (cancelled and lost only when
    there are some)."""
    rare = (CallStatus.CANCELLED, CallStatus.LOST)
    shown = [f"{n} {status.value}" for status, n in counts.items() if n or status not in rare]
    return _separator().join(shown)


# -- corral logs --------------------------------------------------------------------------------


def _logs(args: argparse.Namespace) -> int:
    logs = records.call_logs(records.find_batch(args.batch, args.dir), args.call, args.attempt)
    if args.out or args.err:  # the stream alone, for pipes and files (the file has every byte)
        sys.stdout.write(printable(logs.stdout if args.out else logs.stderr))
        sys.stdout.flush()
        return 0
    # Attempts count from 0 here, as in the file names the headers show.
    _say(f"call {logs.call} of {_one(logs.batch)}, attempt {logs.attempt}: {logs.status.value}")
    streams = [("stdout", logs.stdout_path, logs.stdout), ("stderr", logs.stderr_path, logs.stderr)]
    for title, path, text in streams:
        _say(f"== {title} ({_one(path)}) ==")
        _say(text.rstrip("\n") if text else "(empty)")
    if logs.element_stderr.strip():
        _show_element(logs)
    if logs.traceback:
        _say("== traceback ==")
        if logs.traceback.strip() in logs.stderr:  # the worker also writes it to the call's stderr
            _say("(the end of stderr, above)")
        else:
            _say(logs.traceback.rstrip("\n"))
    elif logs.failure is not None:
        _say("== failure ==")
        _say(f"{_short(logs.failure.type_name)}: {logs.failure.message}")
    elif logs.status is CallStatus.LOST:
        _say("== lost ==")
        _say("it started on this machine, and its process is gone without leaving an outcome")
    return 0


def _show_element(logs: CallLogs) -> None:
    """The end of the stderr of the element that ran the call: where an error outside the
    call (the node could not import the function's module, the process exited hard) is."""
    lines = logs.element_stderr.rstrip("\n").splitlines()
    shown = f"last {_ELEMENT_LINES} of {len(lines)} lines, " if len(lines) > _ELEMENT_LINES else ""
    why = "the call has no outcome" if logs.stderr else "the call has no stderr of its own"
    where = _one(logs.element_stderr_path)
    _say(f"== stderr of {logs.element}, the array element of this call ({shown}{where}) ==")
    _say(f"({why}; an element may run several calls)")
    _say("\n".join(lines[-_ELEMENT_LINES:]))


# -- helpers ------------------------------------------------------------------------------------


def _say(text: str) -> None:
    """Print one piece of output; whatever came from the work dir in it is made harmless."""
    print(printable(text))


def _one(value: str) -> str:
    """A value shown on one line (a name, a table cell): it cannot start another."""
    return printable(value, multiline=False)


def _when(created: float) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)) if created else "?"
    except (OverflowError, OSError, ValueError):  # a time no calendar of this machine can show
        return "?"


def _short(type_name: str) -> str:
    """``builtins.ValueError`` -> ``ValueError``; other modules stay, they say where it is from."""
    return type_name.removeprefix("builtins.")


def _first_line(message: str) -> str:
    lines = message.strip().splitlines()
    return lines[0] + (" ..." if len(lines) > 1 else "") if lines else "(no message)"


def _separator() -> str:
    """`` · `` where the terminal can show it, else ``, ``."""
    try:
        " · ".encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return ", "
    return " · "


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no real file (a test's capture): nothing to do
        pass
