"""``corral sweep status [NAME]``: how the sweeps of the work dir stand, from any shell.

Without NAME, one line per sweep (its trials by state and the best so far); with NAME, that
summary and the trials best first (``--rows N``, default 20; ``--rows 0`` for all). With
``--json``, one document: ``{"work_dir", "sweeps": [sweep...]}``, or the sweep alone, each
``{"name", "path", "metric", "mode", "counts", "best"}`` (``best``: ``{"trial", "value"}`` or
null) and with NAME ``"trials"``: ``{"trial", "status", "step", "attempts", "config",
"metrics", "node", "failure"}`` each, in trial order (``--rows`` does not apply). It reads
the sweep folders' data only (:func:`corral.frontends.sweep.results.read_result`): the
manifest and the trial logs, never a pickle, and asks no scheduler, so a trial whose job died
while it ran shows as running until a driver (``Sweep.run()`` or ``sweep.attach``) settles it.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..errors import CorralError
from ..store import records
from ..store.sweeps import SweepFiles, check_name
from ..transports.local import LocalTransport
from . import jsonout
from .display import printable


def add_commands(commands: Any, shared: argparse.ArgumentParser) -> None:
    """Add ``corral sweep ...`` to the command's subparsers."""
    sweep = commands.add_parser("sweep", help="how sweeps stand (corral sweep status [NAME])")
    actions = sweep.add_subparsers(title="commands", metavar="COMMAND", required=True)
    status = actions.add_parser(
        "status", parents=[shared], help="every sweep, or one sweep's trials",
        description="Without NAME, one line per sweep in the work dir; with NAME, its summary and "
        "its trials, best first (from the sweep's folder; no scheduler is asked).",
    )  # fmt: skip
    status.add_argument("name", nargs="?", metavar="NAME", help="the sweep's name")
    status.add_argument("--rows", type=int, default=20, metavar="N", help="trials shown (default 20, 0: all)")
    status.add_argument("--json", action="store_true", help="print JSON (stable keys: see docs/cli.md)")
    status.set_defaults(command=sweep_status)


def sweep_status(args: argparse.Namespace) -> int:
    from ..frontends.sweep.results import read_result  # only for this command

    root = records.work_root(args.dir)
    transport = LocalTransport()
    if args.name is not None:
        files = SweepFiles(root, check_name(args.name), transport)
        if not files.exists():
            raise CorralError(f"no sweep {args.name!r} in {root} (corral sweep status lists them)")
        result = read_result(files)
        if args.json:
            jsonout.emit(sweep_json(result, trials=True))
            return 0
        print(printable(f"sweep {result.name} ({result.metric}, {result.mode}) in {result.path}"))
        print(printable(result.summary()))
        print(printable(result.table(rows=args.rows or None)))
        return 0
    folder = os.path.join(root, "sweeps")
    names = sorted(n for n in transport.listdir(folder) if not n.startswith("."))
    found = [n for n in names if _is_sweep(root, n)]
    if args.json:
        jsonout.emit({"work_dir": root, "sweeps": [_listed(root, name) for name in found]})
        return 0
    if not found:
        print(printable(f"no sweeps in {root}"))
        return 0
    for name in found:
        try:
            line = read_result(SweepFiles(root, name, transport)).summary()
        except (CorralError, OSError) as exc:  # one broken folder must not hide the others
            line = f"unreadable: {exc}"
        print(printable(f"{name}  {line}", multiline=False))
    return 0


def _listed(root: str, name: str) -> dict[str, Any]:
    from ..frontends.sweep.results import read_result

    try:
        return sweep_json(read_result(SweepFiles(root, name, LocalTransport())))
    except (CorralError, OSError) as exc:  # one broken folder must not hide the others
        return {"name": name, "error": str(exc)}


def sweep_json(result: Any, *, trials: bool = False) -> dict[str, Any]:
    """A sweep for ``sweep status --json`` (a :class:`~corral.frontends.sweep.results.SweepResult`)."""
    from ..frontends.sweep.results import flatten

    try:
        best = result.best()
        top: dict[str, Any] | None = {"trial": best.trial, "value": best.metric(result.metric)}
    except ValueError:  # no trial logged the metric yet
        top = None
    doc: dict[str, Any] = {
        "name": result.name, "path": result.path, "metric": result.metric, "mode": result.mode,
        "counts": result.counts(), "best": top,
    }  # fmt: skip
    if trials:
        doc["trials"] = [
            {"trial": t.trial, "status": t.status, "step": t.step, "attempts": t.attempts,
             "config": flatten(t.config), "metrics": dict(t.metrics), "node": t.node, "failure": t.failure}
            for t in result.trials
        ]  # fmt: skip
    return doc


def _is_sweep(root: str, name: str) -> bool:
    try:
        return SweepFiles(root, name, LocalTransport()).exists()
    except ValueError:  # not a name corral gives a sweep
        return False
