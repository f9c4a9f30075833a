"""``corral doctor [--backend NAME] [--no-job] [--json]``: is this machine ready to run corral jobs?

Each check prints ``OK``, ``WARN`` or ``FAIL`` with a one-line reason, in this order:

=========  ===================================================================================
work dir   the work dir exists, is a folder, and is the user's alone (:mod:`corral.trust`):
           owner and mode; WARN when it does not exist yet (corral makes it, 0700)
backend    which backend ``auto`` (or the configured one) picks and why: the same probes as
           :func:`corral.backends.resolve_name` (``scontrol ping``, then ``qconf -sss``)
scheduler  the scheduler answers, and its version (``sinfo --version``, ``qstat -help``)
limits     what the backend reads before it splits arrays (:meth:`Backend.limits`):
           MaxArraySize, MaxSubmitJobs, the slots, and the partitions (queues)
test job   one call through an :class:`~corral.Executor`: the node's host name, Python and
           corral versions (WARN when they differ from here), and how long it took
=========  ===================================================================================

Exit code 0 when no check FAILs, else 6. ``--no-job`` leaves out the test job. ``--json``
prints ``{"ok": bool, "checks": [{"check", "status", "reason", "details"}]}``.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import stat
import time
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from ..backends import NAMES, backend_class, get_backend
from ..backends.base import Backend
from ..config import resolve
from ..errors import CorralError, UnsafeWorkDirError
from ..store import records
from ..transports.local import LocalTransport
from ..trust import check_private_dir, owner_name
from . import codes, jsonout
from .looking import add_json, one, say

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass
class Check:
    """One check's verdict."""

    check: str
    status: str  # OK, WARN or FAIL
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def probe() -> dict[str, str]:
    """What the test job reports from the node (module-level: the node imports it by name)."""
    host = socket.gethostname()
    # The scheduler's name for the node: several nodes may share one machine, and its name.
    node = os.environ.get("SLURMD_NODENAME") or host
    return {"host": host, "node": node, "python": platform.python_version(), "corral": __version__}


def add_command(commands: Any, shared: argparse.ArgumentParser) -> None:
    """Add ``corral doctor`` to the command's subparsers."""
    doctor = commands.add_parser(
        "doctor", parents=[shared], help="check the backend, scheduler, limits, a test job, the work dir",
        description="Check that corral can run jobs here: each check prints OK, WARN or FAIL and why.",
    )  # fmt: skip
    doctor.add_argument(
        "--backend", metavar="NAME", choices=NAMES, help="check this backend (default: configured)"
    )
    doctor.add_argument("--no-job", action="store_true", help="do not submit the test job")
    doctor.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds the test job may take (default 300)",
    )
    add_json(doctor)
    doctor.set_defaults(command=doctor_command)


def doctor_command(args: argparse.Namespace) -> int:
    """Run the checks; print each as it ends (or the JSON document); exit 6 on a FAIL."""
    checks: list[Check] = []

    def done(check: Check) -> None:
        checks.append(check)
        if not args.json:
            say(f"{check.status:<4}  {check.check:<9}  {one(check.reason)}")

    root = records.work_root(args.dir)
    done(work_dir_check(root))
    name, chosen = backend_choice(args.backend or resolve().backend)
    done(chosen)
    backend = get_backend(name) if chosen.status != FAIL else None
    try:
        if backend is not None:
            done(scheduler_check(backend))
            done(limits_check(backend))
        if not args.no_job:
            if backend is None or checks[0].status == FAIL:
                done(Check("test job", FAIL, "not submitted: a check above failed"))
            else:
                done(job_check(name, root, args.timeout))
    finally:
        if backend is not None:
            backend.close()
    ok = all(c.status != FAIL for c in checks)
    if args.json:
        jsonout.emit({"ok": ok, "checks": [c.__dict__ for c in checks]})
    return codes.OK if ok else codes.CHECK_FAILED


def work_dir_check(root: str) -> Check:
    """The work dir: its owner and mode, and whether corral may use it."""
    real = os.path.realpath(root)
    details: dict[str, Any] = {"path": root}
    try:
        info = os.stat(real)
    except FileNotFoundError:
        return Check("work dir", WARN, f"{root} does not exist yet: corral creates it (mode 0700)", details)
    details.update(owner=owner_name(info.st_uid), mode=f"{stat.S_IMODE(info.st_mode):04o}")
    try:
        check_private_dir(real)
    except UnsafeWorkDirError as exc:
        return Check("work dir", FAIL, str(exc), details)
    where = f"{root} (-> {real})" if real != root else root
    return Check("work dir", OK, f"{where}: {details['owner']}, mode {details['mode']}", details)


def backend_choice(configured: str) -> tuple[str, Check]:
    """The backend to check, and why it is the one: ``auto`` probes as resolve_name does."""
    if configured != "auto":
        try:
            backend_class(configured)
        except CorralError as exc:
            return configured, Check("backend", FAIL, str(exc))
        return configured, Check("backend", OK, f"{configured}: asked for by name", {"name": configured})
    from ..backends.sge import SgeBackend
    from ..backends.slurm import SlurmBackend

    if SlurmBackend.available(LocalTransport()):
        why = "auto picks slurm: `scontrol ping` says the controller is UP"
        return "slurm", Check("backend", OK, why, {"name": "slurm", "auto": True})
    if SgeBackend.available(LocalTransport()):
        why = "auto picks sge: no SLURM controller answers, an SGE qmaster does (`qconf -sss`)"
        return "sge", Check("backend", OK, why, {"name": "sge", "auto": True})
    why = "auto picks local: neither a SLURM controller (`scontrol ping`) nor an SGE qmaster answers"
    return "local", Check("backend", WARN, why + "; jobs run as processes of this machine",
                          {"name": "local", "auto": True})  # fmt: skip


def parse_version(stdout: str) -> str | None:
    """``slurm 23.11.4`` or ``SGE 8.1.9`` (the first line of ``qstat -help``) -> the version. Pure."""
    for word in stdout.split("\n", 1)[0].split():
        if word[:1].isdigit() and "." in word:
            return word
    return None


def parse_partitions(stdout: str) -> tuple[list[str], str | None]:
    """``sinfo -h -o %P`` -> (partitions, the default one, marked ``*``). Pure."""
    names: list[str] = []
    default = None
    for line in stdout.split():
        name = line.rstrip("*")
        if line.endswith("*"):
            default = name
        if name and name not in names:
            names.append(name)
    return names, default


def scheduler_check(backend: Backend) -> Check:
    """The scheduler answers, and its version."""
    if backend.name in ("local", "sequential", "steps"):
        if backend.name == "steps" and not os.environ.get("SLURM_JOB_ID"):
            return Check(
                "scheduler", FAIL, "the steps backend runs inside a SLURM allocation; this is not one"
            )
        return Check("scheduler", OK, f"{backend.name}: no scheduler to ask (processes of this machine)")
    argv = ["sinfo", "--version"] if backend.name == "slurm" else ["qstat", "-help"]
    try:
        result = backend.run(argv, timeout=30)
    except CorralError as exc:
        return Check("scheduler", FAIL, f"{argv[0]} cannot run: {exc}")
    version = parse_version(result.stdout)
    if result.returncode != 0 and version is None:
        return Check("scheduler", FAIL, f"{' '.join(argv)} failed: {result.stderr.strip()[:200]}")
    return Check("scheduler", OK, f"{backend.name} {version or '(version unknown)'} answers",
                 {"name": backend.name, "version": version})  # fmt: skip


def limits_check(backend: Backend) -> Check:
    """What the backend reads before it splits arrays, and the partitions or queues."""
    try:
        limits = backend.limits(resolve().resources)
    except CorralError as exc:
        return Check("limits", FAIL, f"cannot read them: {exc}")
    details: dict[str, Any] = {
        "max_array_size": limits.max_array_size,
        "max_submit_jobs": limits.max_submit_jobs,
        "slots": limits.slots,
    }
    partitions: list[str] = []
    if backend.name in ("slurm", "sge"):
        argv = ["sinfo", "-h", "-o", "%P"] if backend.name == "slurm" else ["qconf", "-sql"]
        try:
            result = backend.run(argv, timeout=30)
            partitions, default = parse_partitions(result.stdout) if result.returncode == 0 else ([], None)
        except CorralError:
            default = None
        details.update(partitions=partitions, default_partition=default)
    submit = "none" if limits.max_submit_jobs is None else str(limits.max_submit_jobs)
    reason = f"MaxArraySize {limits.max_array_size}, MaxSubmitJobs {submit}, {limits.slots} slots"
    if partitions:
        marked = [p + ("*" if p == details["default_partition"] else "") for p in partitions]
        reason += f", partitions {', '.join(marked)}"
    return Check("limits", OK, reason, details)


def job_check(backend: str, root: str, timeout: float) -> Check:
    """One call through an Executor: where it ran, with which Python and corral."""
    from ..frontends.executor import Executor

    started = time.monotonic()
    executor = None
    try:
        executor = Executor(backend, root, max_retries=0)
        future = executor.submit(probe)
        try:
            found = future.result(timeout=timeout)
        except TimeoutError:
            executor.cancel_all()  # its job must not stay in the queue
            return Check(
                "test job", FAIL, f"no result after {timeout:.0f} s (is the queue full? corral status)"
            )
    except Exception as exc:  # noqa: BLE001 - whatever went wrong is the finding
        first = str(exc).splitlines()[0] if str(exc) else ""
        return Check("test job", FAIL, f"{type(exc).__name__}: {first}")
    finally:
        if executor is not None:
            executor.shutdown(wait=False)
    took = time.monotonic() - started
    details = {**found, "seconds": round(took, 1)}
    here = platform.python_version()
    reason = f"ran on {found['node']} in {took:.1f} s: Python {found['python']}, corral {found['corral']}"
    if found["python"].rsplit(".", 1)[0] != here.rsplit(".", 1)[0] or found["corral"] != __version__:
        return Check("test job", WARN, f"{reason}; here: Python {here}, corral {__version__}", details)
    return Check("test job", OK, reason, details)
