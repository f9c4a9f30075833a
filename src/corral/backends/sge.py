"""The Sun Grid Engine backend (Son of Grid Engine 8.1.9 and its kin): qsub arrays, bulk
``qstat -xml`` status, qacct for tasks that ended, qdel.

SGE forgets a task once it ends (zombies aside), and its accounting file keeps no mark of a
qdel; so this backend remembers a little: the size of the arrays it submitted (to notice
tasks that ended), how ended tasks ended (final, so asked once), and what it deleted (so that
a task killed by a signal after our qdel is CANCELLED, not FAILED).

Resources: ``time`` -> ``-l h_rt``, ``memory`` -> ``-l h_vmem`` (per slot, so divided by
``cpus``; SGE enforces it as an address-space limit), ``cpus`` -> ``-pe smp N`` (the
parallel environment's name from ``CORRAL_SGE_PE``), ``partition`` -> ``-q``, ``account`` ->
``-A``. Limits come from the global configuration (``max_aj_tasks``, ``max_u_jobs``) and
``qstat -g c``; ``CORRAL_MAX_ARRAY_SIZE``, ``CORRAL_MAX_SUBMIT_JOBS`` and ``CORRAL_SLOTS``
override them.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import threading
import time
from collections.abc import Sequence

from ..errors import SchedulerError, SubmissionError
from ..job import Condition, ElementStatus, JobState, element_id
from ..resources import Resources
from ..transports.base import CommandResult, CommandTimeout, Transport
from .base import ArraySpec, Backend, Limits, env_int
from .sge_text import (
    DELETING,
    check_resources,
    config_int,
    directive_prefix,
    done_or_gone,
    element,
    parse_cluster_queues,
    parse_config,
    parse_qacct,
    parse_qstat,
    parse_qsub,
    qacct_status,
    render_script,
    task_ranges,
    transient,
)

log = logging.getLogger(__name__)

#: An ended task that qacct does not know after this many seconds was deleted before it
#: started (or its record is lost); until then it may just not be written yet.
ACCOUNTING_GRACE = 60.0
NO_LIMIT = 1_000_000


def _job(eid: str) -> str:
    return eid.split("_", 1)[0]


class SgeBackend(Backend):
    """Speaks to Sun Grid Engine through its command-line tools."""

    name = "sge"
    detached = True
    #: ``-hold_jid`` waits for jobs to end, however they end: no afterok or afternotok.
    conditions = frozenset({Condition.ANY})
    # A job of another script: its number; -hold_jid holds for whole jobs, not tasks.
    outside_ids = re.compile(r"[1-9][0-9]*")
    outside_ids_form = "the job's number ('4242'); Grid Engine waits for whole jobs, not tasks"
    # No time-limit warning is asked of SGE, so no requeue either (requeue stays None); a
    # task it reruns (qmod -r, a rescheduled node) has RESTARTED=1.
    restart_env = "RESTARTED"

    def __init__(self, transport: Transport) -> None:
        super().__init__(transport)
        self.parallel_env = os.environ.get("CORRAL_SGE_PE", "smp")
        self.accounting_grace = ACCOUNTING_GRACE
        self._sizes: dict[str, int] = {}  # elements of each array submitted here
        self._final: dict[str, ElementStatus] = {}  # how ended elements ended
        self._unaccounted: dict[str, float] = {}  # ended, unknown to qacct: since when
        self._cancelled: set[str] = set()  # jobs and elements we deleted
        self._lock = threading.Lock()

    def limits(self, resources: Resources) -> Limits:
        check_resources(resources)  # what the scheduler would misread, before anything is written
        return super().limits(resources)

    def render(self, spec: ArraySpec) -> str:
        return render_script(spec, self.parallel_env)

    def submit_argv(self, spec: ArraySpec, script_path: str, log_pattern: tuple[str, str]) -> list[str]:
        out, err = log_pattern
        # SGE's own stream file, for errors before the script hands over to the element's files
        own = err.format(job="$JOB_ID", index="task$TASK_ID")
        prefix = directive_prefix(spec)
        options = [] if prefix == "#$" else ["-C", prefix]
        return ["qsub", "-terse", *options, "-wd", spec.chdir, "-j", "y", "-o", own, script_path, out, err]

    def submit(self, spec: ArraySpec, script_path: str, log_pattern: tuple[str, str]) -> str:
        if any(c in log_pattern[1] for c in ":,$"):
            raise SubmissionError(
                f"the work dir of {spec.batch_dir!r} has ':', ',' or '$', which qsub -o reads as syntax"
            )
        argv = self.submit_argv(spec, script_path, log_pattern)
        result = self.run(argv, idempotent=False)  # a qsub that timed out may have submitted
        if result.returncode != 0:
            raise SubmissionError(
                f"qsub refused submission {spec.sub} of {spec.batch_dir}: "
                f"{(result.stderr or result.stdout).strip()}\n  command: {shlex.join(argv)}",
                argv=argv,
                stderr=result.stderr,
            )
        job = parse_qsub(result.stdout)
        with self._lock:
            self._sizes[job] = spec.elements
        return job

    def poll(self, job_ids: Sequence[str]) -> dict[str, ElementStatus]:
        if not job_ids:
            return {}
        wanted = set(job_ids)
        live, zombies = parse_qstat(self.check(["qstat", "-xml", "-s", "prsz"]).stdout)
        statuses = {s.element_id: s for s in live if _job(s.element_id) in wanted}
        ended = {e for e in zombies if _job(e) in wanted}
        in_qstat = {_job(e) for e in [*statuses, *ended]}
        with self._lock:
            for job in wanted & self._sizes.keys():  # zombies are not kept for ever, nor always
                ended |= {element_id(job, i) for i in range(self._sizes[job])} - statuses.keys()
            self._final = {e: s for e, s in self._final.items() if _job(e) in wanted}  # jobs still followed
            self._unaccounted = {e: t for e, t in self._unaccounted.items() if _job(e) in wanted}
            for eid, status in statuses.items():
                self._final.pop(eid, None)  # live again: rescheduled
                if status.reason == DELETING:
                    self._cancelled.add(eid)
            ended -= self._final.keys()
            unsized = {j for j in wanted - in_qstat if j not in self._sizes}
        for job in sorted({_job(e) for e in ended} | unsized):
            self._account(job, statuses)
        with self._lock:
            for eid in ended - self._final.keys() - statuses.keys():
                statuses[eid] = self._unaccounted_status(eid)
            statuses.update((e, s) for e, s in self._final.items() if e not in statuses)
        return statuses

    def _account(self, job: str, statuses: dict[str, ElementStatus]) -> None:
        """Read qacct's records of ``job`` into the final states (live tasks excepted)."""
        result = self.run(["qacct", "-j", job])
        if not done_or_gone(result.returncode, result.stderr + result.stdout):
            raise SchedulerError(f"qacct failed: {result.stderr.strip()}", argv=list(result.argv))
        records = {r.element_id: r for r in parse_qacct(result.stdout)}  # the last record counts
        with self._lock:
            for eid, record in records.items():
                if eid in statuses:
                    continue
                status = qacct_status(record, cancelled=bool({job, eid} & self._cancelled))
                if status.state.is_final:
                    self._final[eid] = status
                    self._unaccounted.pop(eid, None)
                else:
                    statuses[eid] = status

    def _unaccounted_status(self, eid: str) -> ElementStatus:
        """An ended task qacct does not know: deleted before it started, or not written yet."""
        if {_job(eid), eid} & self._cancelled:
            self._final[eid] = ElementStatus(eid, JobState.CANCELLED, None, "deleted before it started")
            return self._final[eid]
        first = self._unaccounted.setdefault(eid, time.monotonic())
        if time.monotonic() - first >= self.accounting_grace:
            reason = f"ended with no accounting record after {self.accounting_grace:.0f} s"
            self._final[eid] = ElementStatus(eid, JobState.CANCELLED, None, reason)
            return self._final[eid]
        return ElementStatus(eid, JobState.RUNNING, None, "ended; waiting for its accounting record")

    def cancel(self, job_ids: Sequence[str], *, pending_only: bool = False) -> None:
        if not job_ids:
            return
        # An element "<job>_<index>" is SGE's task <job>.<index + 1>.
        targets = [j if "_" not in j else "{}.{}".format(*_job_task(j)) for j in job_ids]
        marks = set(job_ids)
        if pending_only:
            pending = self._pending_tasks(job_ids)
            targets = [f"{job}.{r}" for job, tasks in pending.items() for r in task_ranges(tasks)]
            marks = {element(job, task) for job, tasks in pending.items() for task in tasks}
        if not targets:
            return
        with self._lock:
            self._cancelled |= marks
        result = self.run(["qdel", *targets])
        if not done_or_gone(result.returncode, result.stdout + result.stderr):
            raise SchedulerError(
                f"qdel failed: {(result.stdout + result.stderr).strip()}", argv=list(result.argv)
            )

    def _pending_tasks(self, job_ids: Sequence[str]) -> dict[str, list[int]]:
        """The SGE tasks of these jobs not started yet, held first so that none starts between
        our look and the qdel (running tasks ignore a hold)."""
        result = self.run(["qhold", *job_ids])
        if not done_or_gone(result.returncode, result.stdout + result.stderr):
            raise SchedulerError(f"qhold failed: {(result.stdout + result.stderr).strip()}")
        live, _ = parse_qstat(self.check(["qstat", "-xml", "-s", "p"]).stdout)
        pending: dict[str, list[int]] = {}
        for status in live:
            job, _, index = status.element_id.partition("_")
            if job in job_ids and status.state in (JobState.PENDING, JobState.REQUEUED):
                pending.setdefault(job, []).append(int(index) + 1)
        return pending

    def widen(self, job_id: str, max_running: int) -> None:
        result = self.run(["qalter", "-tc", str(max_running), job_id])
        if not done_or_gone(result.returncode, result.stdout + result.stderr):
            raise SchedulerError(
                f"could not widen {job_id}: {(result.stdout + result.stderr).strip()}", argv=list(result.argv)
            )

    def queued_jobs(self) -> int:
        """How many array elements the user has pending or running now."""
        live, _ = parse_qstat(self.check(["qstat", "-xml"]).stdout)
        return len(live)

    def discover_limits(self, resources: Resources) -> Limits:
        config = parse_config(self.check(["qconf", "-sconf"]).stdout)
        max_array = env_int("CORRAL_MAX_ARRAY_SIZE") or config_int(config, "max_aj_tasks") or NO_LIMIT
        max_submit = env_int("CORRAL_MAX_SUBMIT_JOBS") or config_int(config, "max_u_jobs")
        slots = env_int("CORRAL_SLOTS")
        if slots is None:
            queues = parse_cluster_queues(self.check(["qstat", "-g", "c"]).stdout)
            # without -q a job may go to any queue; queues often share hosts, so take the largest
            total = (
                queues.get(resources.partition, 0) if resources.partition else max(queues.values(), default=0)
            )
            slots = max(1, total // (resources.cpus or 1))
        limits = Limits(max_array_size=max_array, max_submit_jobs=max_submit, slots=slots)
        log.info("SGE limits for %s: %s", resources.partition or "any queue", limits)
        return limits

    def transient(self, result: CommandResult) -> bool:
        return transient(result.stdout + result.stderr)

    @classmethod
    def available(cls, transport: Transport) -> bool:
        """True when the SGE tools exist and qmaster answers. Asked once, without the retries
        of :meth:`run`, so that ``auto`` does not wait for a qmaster that is down."""
        try:
            result = transport.run(["qconf", "-sss"], timeout=10)
        except (FileNotFoundError, CommandTimeout):
            return False
        return result.returncode == 0 and bool(result.stdout.strip())


def _job_task(element_id: str) -> tuple[str, int]:
    job, _, index = element_id.partition("_")
    return job, int(index) + 1
