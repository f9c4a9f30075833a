"""``corral clean [BATCH...] [--older-than 7d] [--keep-failed] [--force] [--dry-run]``: remove batch folders.

What is removed comes in *units*: a batch folder, or a sweep (``sweeps/<name>``, see
:mod:`corral.store.sweeps`) together with the batches its manifest lists, since a sweep
without its batches cannot be resumed or attached, and its batches without the sweep are
trials nobody can read as a sweep. A unit is removed whole or not at all:

* its age is counted from the newest time it holds: a batch's creation (the time
  ``corral status`` shows); a sweep's last manifest write and its batches' creation;
* it is kept while it has *live* calls (pending, running or lost, per the folders) whose jobs
  the scheduler still runs (one bulk query per backend; a batch with such calls and no job
  id, or whose scheduler cannot be asked, counts as live). ``--force`` removes it all the
  same, after cancelling it as ``corral cancel`` does;
* ``--keep-failed`` keeps a unit in which any call failed;
* only folders directly in the work dir (a sweep: in its ``sweeps/``) are removed, each
  checked to be the user's alone (:mod:`corral.trust`) and no symbolic link; a folder is
  first renamed to a hidden name (readers stop seeing it at once), then deleted.

With BATCH names only those units are considered (a name may be a sweep's); a batch that
belongs to a sweep is named through its sweep. ``--dry-run`` prints what would go, and
removes nothing. It prints one line per unit and the space freed (disk blocks, as ``du``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from ..backends import get_backend
from ..errors import CorralError, SchedulerError
from ..store import records
from ..store.records import CallStatus
from ..store.sweeps import SweepFiles
from ..transports.local import LocalTransport
from ..trust import check_private_dir
from . import codes
from .cancelling import cancel_batch
from .looking import one, say

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``30m``, ``12h``, ``7d``, ``2w`` (also ``90s``, ``1.5d``) -> seconds. Pure."""
    found = _DURATION.fullmatch(text.strip().lower())
    if found is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: use a number and s, m, h, d or w (7d)")
    return float(found.group(1)) * _SECONDS[found.group(2)]


@dataclass
class Unit:
    """A batch, or a sweep with its batches: removed whole or not at all."""

    kind: str  # "batch" or "sweep"
    name: str
    folders: list[str]  # a sweep's own folder first
    batches: list[str] = field(default_factory=list)
    newest: float = 0.0  # seconds since the epoch
    failed: bool = False
    open: list[records.OpenCalls] = field(default_factory=list)  # batches with calls not ended
    live: bool = False
    size: int = 0


def add_command(commands: Any, shared: argparse.ArgumentParser) -> None:
    """Add ``corral clean`` to the command's subparsers."""
    clean = commands.add_parser(
        "clean", parents=[shared], help="remove batch folders (and sweeps with their batches)",
        description="Remove batch folders of the work dir: never one with live jobs (unless --force), "
        "nothing outside the work dir, nothing that is not yours alone. A sweep goes with its batches.",
    )  # fmt: skip
    clean.add_argument(
        "batches", nargs="*", metavar="BATCH", help="a batch (or sweep) to remove; default: all"
    )
    clean.add_argument(
        "--older-than",
        type=parse_duration,
        metavar="AGE",
        help="only those older than AGE (30m, 12h, 7d, 2w)",
    )
    clean.add_argument(
        "--keep-failed", action="store_true", help="keep batches (and sweeps) with failed calls"
    )
    clean.add_argument("--force", action="store_true", help="remove live batches too, cancelling them first")
    clean.add_argument("--dry-run", action="store_true", help="print what would be removed, remove nothing")
    clean.set_defaults(command=clean_command)


def clean_command(args: argparse.Namespace) -> int:
    """``corral clean``: print each unit removed (or kept, and why) and the space freed."""
    root = records.work_root(args.dir)
    if not os.path.isdir(root):
        say(f"nothing to clean: there is no work dir {one(root)}")
        return codes.NOTHING
    units = _select(find_units(root), args.batches, root, args.dir)
    now = time.time()
    chosen = [u for u in units if args.older_than is None or now - u.newest >= args.older_than]
    _mark_live(chosen)
    verb = "would remove" if args.dry_run else "removed"
    freed = removed = 0
    for unit in chosen:
        label = f"{unit.kind} {one(unit.name)}"
        if unit.failed and args.keep_failed:
            say(f"kept {label}: it has failed calls (--keep-failed)")
            continue
        if unit.live and not args.force:
            say(f"kept {label}: its jobs still run (corral cancel, or --force)")
            continue
        unit.size = sum(_disk_usage(folder) for folder in unit.folders)
        if not args.dry_run:
            _remove(unit, root)
        more = f", with {len(unit.batches)} batches" if unit.kind == "sweep" else ""
        say(f"{verb} {label} ({human(unit.size)}{more})")
        freed += unit.size
        removed += 1
    if not removed:
        say(f"nothing to remove in {one(root)}")
        return codes.NOTHING
    what = "would free" if args.dry_run else "freed"
    say(f"{what} {human(freed)} in {removed} unit{'s' if removed > 1 else ''}")
    return codes.OK


def find_units(root: str) -> list[Unit]:
    """Every sweep (with the batches it lists) and every other batch of the work dir ``root``."""
    batches = records.list_batches(root)
    units: list[Unit] = []
    taken: set[str] = set()
    inside = {os.path.realpath(p): p for p in batches}
    folder = os.path.join(root, "sweeps")
    for name in sorted(LocalTransport().listdir(folder)):
        files = _sweep(root, name)
        if files is None:
            continue
        try:
            manifest = files.read_manifest()
        except (CorralError, OSError, ValueError) as exc:
            print(f"corral: sweep {one(name)} skipped: {one(str(exc))}", file=sys.stderr)
            continue
        listed = [e.get("batch") for e in manifest.get("batches", []) if isinstance(e, dict)]
        mine = [
            inside[os.path.realpath(p)]
            for p in listed
            if isinstance(p, str) and os.path.realpath(p) in inside
        ]
        taken.update(mine)
        written = manifest.get("written")
        newest = max(
            [float(written) if isinstance(written, (int, float)) else 0.0, *map(records.created, mine)]
        )
        units.append(Unit("sweep", name, [files.path, *mine], mine, newest))
    for path in batches:
        if path not in taken:
            units.append(Unit("batch", os.path.basename(path), [path], [path], records.created(path)))
    for unit in units:
        unit.failed = any(_failed(path) for path in unit.batches)
    return units


def _sweep(root: str, name: str) -> SweepFiles | None:
    try:
        files = SweepFiles(root, name, LocalTransport())
        return files if files.exists() else None
    except (ValueError, OSError):  # not a name corral gives a sweep, or not a folder
        return None


def _failed(path: str) -> bool:
    try:
        return records.summarize(path).counts[CallStatus.FAILED] > 0
    except (CorralError, OSError):
        return False


def _select(units: list[Unit], refs: list[str], root: str, directory: str | None) -> list[Unit]:
    """The units ``refs`` name (all when there are none): a sweep by its name, a batch as
    ``corral status`` finds it; a batch of a sweep is refused, naming its sweep."""
    if not refs:
        return units
    chosen: list[Unit] = []
    for ref in refs:
        sweep = next((u for u in units if u.kind == "sweep" and u.name == ref), None)
        if sweep is None:
            path = records.find_batch(ref, directory)
            if os.path.dirname(os.path.realpath(path)) != os.path.realpath(root):
                raise CorralError(f"{path} is not in the work dir {root}: corral clean removes nothing else")
            unit = next((u for u in units if path in u.batches), None)
            if unit is None:
                raise CorralError(f"{path} is not a batch of the work dir {root}")
            if unit.kind == "sweep":
                raise CorralError(
                    f"{os.path.basename(path)} is a batch of sweep {unit.name!r}: a sweep goes with its "
                    f"batches, so name the sweep (corral clean {unit.name})"
                )
            sweep = unit
        if sweep not in chosen:
            chosen.append(sweep)
    return chosen


def _mark_live(units: list[Unit]) -> None:
    """Set ``live`` on the units whose calls are not all ended and whose jobs the scheduler
    still runs: one bulk query per backend for every such batch's jobs."""
    by_backend: dict[str, list[records.OpenCalls]] = {}
    for unit in units:
        for path in unit.batches:
            try:
                found = records.open_calls(path)
            except (CorralError, OSError):
                continue  # unreadable: nothing in it can be running for corral
            if found:
                unit.open.append(found)
                by_backend.setdefault(found.backend, []).append(found)
    running: set[str] = set()
    unknown: set[str] = set()  # backends that could not be asked
    for name, batches in by_backend.items():
        ids = [job for f in batches for job in f.job_ids]
        try:
            backend = get_backend(name)
        except CorralError:
            unknown.add(name)
            continue
        try:
            if backend.detached and ids:
                statuses = backend.poll(ids).values()
                running.update(s.element_id.split("_")[0] for s in statuses if not s.state.is_final)
        except SchedulerError:
            unknown.add(name)
        finally:
            backend.close()
    for unit in units:
        unit.live = any(_live(f, running, unknown) for f in unit.open)


def _live(found: records.OpenCalls, running: set[str], unknown: set[str]) -> bool:
    if found.backend in unknown or found.here or not found.job_ids:
        return True  # a process of this host runs, or nothing tells that none does
    if found.backend in ("local", "sequential"):
        # Its elements are processes of the client that made it: those running here, and
        # pending calls, which that client (if it lives) will still start.
        return bool(found.here or found.pending)
    return any(job in running for job in found.job_ids)


def _remove(unit: Unit, root: str) -> None:
    """Remove the unit's folders (a sweep's own first: what is left then is plain batches)."""
    real_root = os.path.realpath(root)
    for folder in unit.folders:
        expected = (
            os.path.join(real_root, "sweeps")
            if unit.kind == "sweep" and folder == unit.folders[0]
            else real_root
        )
        parent = os.path.dirname(os.path.abspath(folder))
        if os.path.realpath(parent) != expected:
            raise CorralError(f"refusing to remove {folder}: it is not in the work dir {root}")
        check_private_dir(folder)  # a real folder, the user's alone: never a link, never another's
        if unit.live:
            for found in unit.open:
                if found.path == folder:
                    cancel_batch(folder)
        hidden = os.path.join(parent, f".removing-{os.path.basename(folder)}")
        os.rename(folder, hidden)
        shutil.rmtree(hidden)


def _disk_usage(folder: str) -> int:
    """The disk space the files under ``folder`` take (blocks, as ``du``), links not followed."""
    total = 0
    for base, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            try:
                total += os.lstat(os.path.join(base, name)).st_blocks * 512
            except OSError:
                pass
    try:
        total += os.lstat(folder).st_blocks * 512
    except OSError:
        pass
    return total


def human(size: float) -> str:
    """``1536`` -> ``1.5 KiB``. Pure."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # not reached
