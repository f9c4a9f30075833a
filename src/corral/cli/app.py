"""The ``corral`` command: look at batches in the work dir, and act on them, without writing Python.

::

    corral                                     the same as ``corral status``
    corral status [BATCH] [--json]             every batch, or one batch in detail (.looking)
    corral status [BATCH] --watch [SECONDS]    progress bars until the calls ended (.watching)
    corral logs BATCH CALL [--attempt N] [--out | --err | --json]    a call's output (.looking)
    corral sweep status [NAME] [--rows N] [--json]                    sweeps (.sweeps)
    corral cancel BATCH [BATCH...] | --all     cancel batches' jobs (.cancelling)
    corral clean [BATCH...] [--older-than 7d] [--keep-failed] [--force] [--dry-run]
                                               remove batch folders (.cleaning)
    corral attach BATCH [--results] [--json]   wait for a batch to end (.attaching)
    corral doctor [--backend NAME] [--json]    check the setup (.doctor)
    corral --version

Every command takes ``--dir DIR`` and ``--host NAME``. BATCH is a batch folder's name, a
unique prefix of one, or a path. The work dir is ``--dir``, else the configured
``directory`` (``$CORRAL_DIR``, config files), else ``./.corral``. With ``--host NAME`` (or
``$CORRAL_HOST``) the same command runs on that host (see :mod:`corral.frontends.hosts`),
over the process's one SSH session, with the host's work dir unless ``--dir`` names another
there (see :mod:`.remote`).

``status``, ``logs`` and ``sweep status`` read the files only and never unpickle (see
:mod:`corral.store.records`); ``cancel``, ``clean`` and ``doctor`` ask the batch's scheduler;
``attach`` watches the batch as :func:`corral.attach` does (it loads the batch's pickles, after
the trust checks of :mod:`corral.trust`). Everything printed from a work dir goes through
:func:`corral.cli.display.printable`, so no text there can drive the terminal; ``--json``
output (see :mod:`.jsonout`) is ASCII JSON with stable keys.

Exit codes (:mod:`.codes`): 0 done, 1 an error explained on stderr, 2 a usage error, 3 the
work dir (or a batch folder) is not the user's alone, so nothing in it was read, 4 ``attach``:
the batch ended with failed or cancelled calls, 5 nothing matched (``cancel --all`` found no
live batch, ``clean`` nothing to remove), 6 ``doctor``: a check failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from ..errors import CorralError, UnsafeWorkDirError
from . import attaching, cancelling, cleaning, codes, doctor, looking
from .display import printable
from .sweeps import add_commands as add_sweep_commands

#: The exit code when the work dir is refused (see corral.trust).
UNSAFE = codes.UNSAFE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``corral`` command with ``argv`` (default ``sys.argv[1:]``); return its exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse exits on usage errors (2) and on --help (0)
        return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    # `corral` alone shows the status, as `git status` is what one types first.
    command: Callable[[argparse.Namespace], int] = getattr(args, "command", looking.status_command)
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
        return codes.ERROR
    except KeyboardInterrupt:
        print("corral: interrupted", file=sys.stderr)
        return codes.INTERRUPTED
    except UnsafeWorkDirError as exc:  # before OSError: it is a PermissionError too
        print(f"corral: error: {printable(str(exc))}", file=sys.stderr)
        return codes.UNSAFE
    except (CorralError, OSError) as exc:
        print(f"corral: error: {printable(str(exc))}", file=sys.stderr)
        return codes.ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral",
        description="Look at corral batches in the work dir, and act on them. "
        "Without a command, the same as `corral status`.",
    )
    parser.add_argument("--version", action="version", version=f"corral {__version__}")
    parser.set_defaults(batch=None, dir=None, host=None, json=False)  # `corral` alone: `corral status`
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
    looking.add_commands(commands, shared)
    add_sweep_commands(commands, shared)
    cancelling.add_command(commands, shared)
    cleaning.add_command(commands, shared)
    attaching.add_command(commands, shared)
    doctor.add_command(commands, shared)
    return parser


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no real file (a test's capture): nothing to do
        pass
