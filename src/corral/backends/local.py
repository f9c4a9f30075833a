"""The local backend: array elements as processes on this machine, honouring the same
contract as a cluster (arrays, states, cancel, enforced time limits), at most as many
CPUs busy at once as the machine has (``CORRAL_LOCAL_SLOTS`` overrides)."""

from __future__ import annotations

import collections
import itertools
import logging
import os
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from ..environment import Environment
from ..errors import SubmissionError
from ..job import Dependency, ElementStatus, JobState
from ..resources import Resources
from ..store.protocol import Ranks, Requeue
from ..transports.base import Transport
from ..transports.local import LocalTransport
from ..worker.checkpoint import WARNING_SIGNAL
from .base import ArraySpec, Backend, Limits, warning_trap
from .script import worker_lines

log = logging.getLogger(__name__)

#: The exit code with which an element asks to run again (after a time-limit warning).
REQUEUE_EXIT = 99
#: How many times an element ran again, set in its environment (0 on its first run).
RESTART_ENV = "CORRAL_RESTART_COUNT"
KILL_WAIT = 2.0  # seconds between SIGTERM and SIGKILL, like SLURM's KillWait
TICK = 0.02  # how often running processes are checked


@dataclass
class _Element:
    job_id: str
    index: int
    argv: list[str]
    chdir: str
    logs: tuple[str, str]
    cpus: int
    time_limit: float | None
    dependency: Dependency | None = None  # held until these jobs ended as it asks
    name: str = ""  # the job's name (ArraySpec.name)
    singleton: bool = False  # never runs while another element of its name runs
    state: JobState = JobState.PENDING
    reason: str = ""
    proc: subprocess.Popen[bytes] | None = None
    deadline: float = float("inf")
    kill_state: JobState | None = None  # why we are killing it
    kill_at: float = float("inf")  # when SIGKILL follows SIGTERM
    warning: float | None = None  # seconds before the time limit that it gets SIGUSR1
    warn_at: float = float("inf")
    restarts: int = 0  # times it asked to run again (exit REQUEUE_EXIT)
    returncode: int | None = None  # how its last process ended (negative: by that signal)

    @property
    def element_id(self) -> str:
        return f"{self.job_id}_{self.index}"


class LocalBackend(Backend):
    """Runs array elements as local processes under a small scheduler thread."""

    name = "local"
    requeue = Requeue(exit_code=REQUEUE_EXIT)
    restart_env = RESTART_ENV
    # An element writes its outcomes before its process exits, and the process's exit is
    # what makes it final here: once it is final, what the work dir holds is all there is.
    outcome_grace: ClassVar[float | None] = 0.0

    def __init__(self, transport: Transport | None = None, slots: int | None = None) -> None:
        super().__init__(transport or LocalTransport())
        env_slots = os.environ.get("CORRAL_LOCAL_SLOTS", "")
        self.slots = slots or (int(env_slots) if env_slots.isdigit() else None) or os.cpu_count() or 1
        self._elements: dict[str, _Element] = {}
        self._queue: collections.deque[_Element] = collections.deque()
        self._running: list[_Element] = []
        self._throttle: dict[str, int] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._adopted: dict[str, int] = {}  # element id -> pid, of elements attached to here
        self._finalizer = weakref.finalize(self, _kill_all, self._running)

    def render(self, spec: ArraySpec) -> str:
        res = spec.resources
        limit = f"time limit {res.time}, enforced by corral" if res.time else "no time limit"
        return "\n".join(
            [
                "#!/bin/bash",
                f"# corral local job: submission {spec.sub}, {spec.elements} element(s), {limit}",
                *warning_trap(spec),
                *worker_lines(spec, '"$CORRAL_ARRAY_TASK_ID"', '"$CORRAL_ELEMENT_ID"'),
                "",
            ]
        )

    def ranks(self, environment: Environment, resources: Resources, python: str) -> Ranks | None:
        if not environment.per_task:
            return None
        count = resources.tasks or resources.nodes or 1  # the tasks a cluster would start
        return Ranks(argv=(*environment.launcher, python), count=count, gather=environment.per_task == "all")

    def submit_argv(self, spec: ArraySpec, script_path: str, log_pattern: tuple[str, str]) -> list[str]:
        return ["/bin/bash", script_path]

    def submit(self, spec: ArraySpec, script_path: str, log_pattern: tuple[str, str]) -> str:
        if spec.dependency is not None:
            ids = [j for _, clause in spec.dependency.clauses() for j in clause]
            unknown = [j for j in ids if not self._elements_of(j)]
            if unknown:
                raise SubmissionError(f"the local backend knows no job {', '.join(unknown)} to wait for")
        # The process id in it: a batch attached from a process that died must not take the
        # statuses of this process's own jobs for its own (a counter alone restarts at 1).
        job_id = f"L{os.getpid()}-{next(self._ids)}"
        limit = spec.resources.time.total_seconds() if spec.resources.time else None
        cpus = min(self.element_slots(spec.resources), self.slots)
        with self._cond:
            if spec.max_running:
                self._throttle[job_id] = spec.max_running
            for index in range(spec.elements):
                logs = (
                    log_pattern[0].format(job=job_id, index=index),
                    log_pattern[1].format(job=job_id, index=index),
                )
                element = _Element(
                    job_id,
                    index,
                    self.submit_argv(spec, script_path, log_pattern),
                    spec.chdir,
                    logs,
                    cpus,
                    limit,
                    spec.dependency,
                    name=spec.name,
                    singleton=bool(spec.resources.singleton),
                    warning=spec.resources.warning_seconds(),
                )
                self._elements[element.element_id] = element
                self._queue.append(element)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="corral-local", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return job_id

    def poll(self, job_ids: Sequence[str]) -> dict[str, ElementStatus]:
        wanted = set(job_ids)
        with self._cond:
            found = {eid: _status(el) for eid, el in self._elements.items() if el.job_id in wanted}
            adopted = [(eid, pid) for eid, pid in self._adopted.items() if eid.rpartition("_")[0] in wanted]
        for eid, pid in adopted:
            found[eid] = _adopted_status(eid, pid)
        return found

    def adopt_elements(self, pids: Mapping[str, int]) -> None:
        """Elements a client that died left running (see :meth:`Backend.adopt_elements`):
        reported by their pid, RUNNING while it lives, then LOST (their outcomes, if they
        wrote them, are read all the same), so that nobody waits for the scheduler's
        silence to learn that a process of this machine is gone."""
        with self._cond:
            self._adopted.update(pids)

    def cancel(self, job_ids: Sequence[str], *, pending_only: bool = False) -> None:
        wanted = set(job_ids)
        with self._cond:
            for el in self._elements.values():
                if el.job_id not in wanted and el.element_id not in wanted:
                    continue
                if el.state is JobState.PENDING:
                    el.state = JobState.CANCELLED
                elif el.state is JobState.RUNNING and not pending_only:
                    self._kill(el, JobState.CANCELLED)
            self._queue = collections.deque(e for e in self._queue if e.state is JobState.PENDING)
            self._cond.notify_all()
            # Elements another client left running here (adopt_elements): not our children,
            # but each leads a session of its own, so its whole group is signalled.
            adopted = (
                [] if pending_only else [pid for eid, pid in self._adopted.items() if _wanted(eid, wanted)]
            )
        for pid in adopted:
            try:
                os.killpg(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):  # gone, or its pid is no longer ours
                pass

    def widen(self, job_id: str, max_running: int) -> None:
        with self._cond:
            self._throttle[job_id] = max_running
            self._cond.notify_all()

    def element_slots(self, resources: Resources) -> int:
        """How many of the ``slots`` one element asking for ``resources`` takes: here one per
        CPU (a subclass whose slots are bigger units says so)."""
        return resources.cpus or 1

    def limits(self, resources: Resources) -> Limits:
        slots = max(1, self.slots // self.element_slots(resources))
        return Limits(max_array_size=1_000_000, max_submit_jobs=None, slots=slots)

    def close(self) -> None:
        with self._cond:
            for el in self._queue:
                el.state = JobState.CANCELLED
            self._queue.clear()
            for el in self._running:
                self._kill(el, JobState.CANCELLED)
            self._cond.notify_all()

    # -- the scheduler thread -----------------------------------------------------------------

    def _run(self) -> None:
        with self._cond:
            while self._queue or self._running:
                try:
                    self._reap()
                    self._start_what_fits()
                except Exception:  # a bug here must not leave every later element pending
                    log.exception("the local backend's scheduler thread hit an error; it goes on")
                self._cond.wait(TICK)
            self._thread = None

    def _reap(self) -> None:
        now = time.monotonic()
        for el in list(self._running):
            assert el.proc is not None
            code = el.proc.poll()
            if code is not None:
                el.state = el.kill_state or _ended_state(code)
                el.returncode = code
                self._running.remove(el)
                if code == REQUEUE_EXIT and el.kill_state is None:  # it asked to run again
                    el.state, el.proc, el.restarts = JobState.PENDING, None, el.restarts + 1
                    el.deadline = el.warn_at = float("inf")
                    self._queue.appendleft(el)
            elif el.kill_state is None and now >= el.deadline:
                self._kill(el, JobState.TIMEOUT)
            elif now >= el.warn_at:  # like SLURM's --signal=B:USR1@grace: the worker alone
                el.warn_at = float("inf")
                el.proc.send_signal(WARNING_SIGNAL)
            elif now >= el.kill_at:
                _signal(el, signal.SIGKILL)

    def _elements_of(self, job_id: str) -> list[_Element]:
        """The elements a dependency names: one (``"L3_2"``) or a whole array (``"L3"``)."""
        if job_id in self._elements:
            return [self._elements[job_id]]
        return [el for el in self._elements.values() if el.job_id == job_id]

    def _held(self, el: _Element) -> bool:
        """True while ``el`` waits for its dependencies, as SLURM holds a job: each clause's
        jobs must have settled (ended; for ``started``, left the pending state), and one that
        can never be met (as ``--kill-on-invalid-dep`` does in SLURM) cancels it. A singleton
        also waits while an element of its name runs."""
        if el.dependency is not None:
            clauses = [
                (condition, [d for j in ids for d in self._elements_of(j)])
                for condition, ids in el.dependency.clauses()
            ]
            if any(not c.settled_by(d.state) for c, needed in clauses for d in needed):
                return True
            missed = next((d for c, needed in clauses for d in needed if not c.met_by(d.state)), None)
            if missed is not None:
                el.state = JobState.CANCELLED
                el.reason = f"dependency never satisfied: {missed.element_id} ended {missed.state.name}"
                self._queue.remove(el)
                return True
            el.dependency = None
        # SLURM's singleton: no other job of this name runs meanwhile (per user there; here,
        # of this process's local jobs, which are all the local backend knows). The elements
        # of one array are one job to it: they run beside each other (tests/data/slurm).
        return el.singleton and any(o.name == el.name and o.job_id != el.job_id for o in self._running)

    def _start_what_fits(self) -> None:
        busy = sum(el.cpus for el in self._running)
        per_job = collections.Counter(el.job_id for el in self._running)
        for el in list(self._queue):
            if self._held(el):
                continue  # waiting for other jobs does not hold up those behind it
            if busy + el.cpus > self.slots:
                break  # first come, first served: no overtaking
            if per_job[el.job_id] >= self._throttle.get(el.job_id, 1 << 30):
                continue
            self._queue.remove(el)
            if not self._start(el):
                continue
            busy += el.cpus
            per_job[el.job_id] += 1

    def _start(self, el: _Element) -> bool:
        """Start ``el``'s process; False when it could not start, which fails that element
        alone (as sbatch's job would fail on a node whose working directory is gone)."""
        env = {
            **os.environ,
            "CORRAL_ARRAY_TASK_ID": str(el.index),
            "CORRAL_ELEMENT_ID": el.element_id,
            RESTART_ENV: str(el.restarts),
        }
        fds: list[int] = []
        try:
            for path in el.logs:
                fds.append(_open_log(path))
            el.proc = subprocess.Popen(
                el.argv,
                cwd=el.chdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=fds[0],
                stderr=fds[1],
                start_new_session=True,
            )
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            el.state, el.proc = JobState.FAILED, None
            el.reason = f"could not start: {exc}"
            log.warning("local element %s %s", el.element_id, el.reason)
            return False
        finally:
            for fd in fds:  # the child holds its own copies
                os.close(fd)
        el.state = JobState.RUNNING
        if el.time_limit is not None:
            el.deadline = time.monotonic() + el.time_limit
            if el.warning is not None:
                el.warn_at = el.deadline - el.warning
        self._running.append(el)
        return True

    def _kill(self, el: _Element, why: JobState) -> None:
        el.kill_state = why
        el.kill_at = time.monotonic() + KILL_WAIT
        _signal(el, signal.SIGTERM)


def _ended_state(code: int) -> JobState:
    """How an element this backend did not kill ended: a SIGTERM from outside (``corral
    cancel``, ``kill``) cancelled it, as SLURM reports a ``scancel``."""
    if code == 0:
        return JobState.COMPLETED
    return JobState.CANCELLED if code == -signal.SIGTERM else JobState.FAILED


def _wanted(element_id: str, wanted: set[str]) -> bool:
    return element_id in wanted or element_id.rpartition("_")[0] in wanted


def _adopted_status(element_id: str, pid: int) -> ElementStatus:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or its pid is another user's now
        return ElementStatus(element_id, JobState.LOST, None, "its client process ended")
    return ElementStatus(element_id, JobState.RUNNING, None)


def _open_log(path: str) -> int:
    """An element's log, appended to (a requeued element keeps its first run's lines),
    readable by its owner alone, and never through a symlink planted in its place."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)


def _status(el: _Element) -> ElementStatus:
    """What ``poll`` says of ``el``: a negative return code is the signal that ended it."""
    code = el.returncode if el.state.is_final else None
    return ElementStatus(
        el.element_id,
        el.state,
        "localhost",
        el.reason,
        exit_code=code if code is not None and code >= 0 else None,
        signal=-code if code is not None and code < 0 else None,
    )


def _signal(el: _Element, sig: int) -> None:
    if el.proc is not None:
        try:
            os.killpg(el.proc.pid, sig)
        except ProcessLookupError:
            pass


def _kill_all(running: list[_Element]) -> None:
    for el in list(running):
        _signal(el, signal.SIGKILL)
