"""The SLURM backend: sbatch arrays, bulk squeue/sacct status, scancel.

Limits are discovered once per resource shape and can be overridden with environment
variables: ``CORRAL_MAX_ARRAY_SIZE`` (elements per array), ``CORRAL_MAX_SUBMIT_JOBS``
(elements queued at once), ``CORRAL_SLOTS`` (elements that can run at once).

On a site of several clusters, ``clusters="name"`` (the setting, see :mod:`corral.config`)
puts ``-M name`` into every command this backend runs: sbatch, squeue, sacct, scancel,
scontrol and sinfo (sacctmgr, which has no ``-M``, gets ``cluster=name``). One engine follows
one cluster, with one bulk status query per interval; jobs of another cluster are no
dependencies here (SLURM numbers jobs per cluster). The commands a job runs on its node
(``scontrol requeue``) need none: a node belongs to its cluster.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Sequence

from ..environment import Environment
from ..errors import SchedulerError, SubmissionError
from ..job import ElementStatus
from ..resources import Resources
from ..store.protocol import JOB_ID, Ranks, Requeue
from ..transports.base import CommandResult, Transport
from .base import ArraySpec, Backend, Limits, env_int
from .slurm_text import (
    SACCT_FIELDS,
    SQUEUE_FORMAT,
    check_resources,
    cluster_argv,
    config_int,
    enforces_limits,
    explain_kill,
    parse_config,
    parse_job_commands,
    parse_max_submit,
    parse_sacct,
    parse_sbatch,
    parse_sinfo_cpus,
    parse_squeue,
    parse_user,
    render_script,
    scancel_says_gone,
    squeue_says_unknown,
    submission_unknown,
    throttle_update_ok,
    transient_failure,
    with_exit_code,
)

log = logging.getLogger(__name__)


class SlurmBackend(Backend):
    """Speaks to SLURM through its command-line tools."""

    name = "slurm"
    detached = True
    # The element's own job id: an array element has one of its own, which scontrol takes.
    requeue = Requeue(argv=("scontrol", "requeue", JOB_ID), job_id_env="SLURM_JOB_ID")
    restart_env = "SLURM_RESTART_COUNT"  # how many times the job was requeued
    # A job of another script (``sbatch --wrap``): "4242", or an array element "4242_3".
    outside_ids = re.compile(r"[1-9][0-9]*(?:_[0-9]+)?")
    outside_ids_form = "digits ('4242') or an array element ('4242_3')"

    def __init__(self, transport: Transport, clusters: str | None = None) -> None:
        super().__init__(transport)
        #: The cluster every command names (``-M``) on a multi-cluster site; None: the default.
        self.clusters = clusters
        self._config: dict[str, str] | None = None
        self._ends: dict[str, ElementStatus] = {}  # sacct's word on elements squeue shows failed
        self._user: str | None = None

    def limits(self, resources: Resources) -> Limits:
        check_resources(resources)  # what the scheduler would misread, before anything is written
        return super().limits(resources)

    def render(self, spec: ArraySpec) -> str:
        return render_script(spec)

    def ranks(self, environment: Environment, resources: Resources, python: str) -> Ranks | None:
        if not environment.per_task:
            return None
        # srun starts every task of the allocation; one rank that fails ends the others,
        # which would otherwise wait for it in their next collective operation.
        argv = ["srun", "--kill-on-bad-exit=1"]
        argv += [f"--cpus-per-task={resources.cpus}"] if resources.cpus else []  # 22.05: not inherited
        argv += [f"--{k}" if v is None else f"--{k}={v}" for k, v in environment.srun or ()]
        return Ranks(
            argv=(*argv, *environment.launcher, python), gather=environment.per_task == "all",
            names=("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURMD_NODENAME"),
        )  # fmt: skip

    def submit_argv(self, spec: ArraySpec, script_path: str, log_pattern: tuple[str, str]) -> list[str]:
        out, err = (p.format(job="%A", index="%a") for p in log_pattern)
        return self._argv(
            "sbatch", "--parsable", f"--chdir={spec.chdir}", f"--output={out}", f"--error={err}", script_path
        )

    def submit(self, spec: ArraySpec, script_path: str, log_pattern: tuple[str, str]) -> str:
        if "%" in spec.batch_dir:
            raise SubmissionError(
                f"the work dir {spec.batch_dir!r} contains '%', which sbatch reads as a pattern"
            )
        argv = self.submit_argv(spec, script_path, log_pattern)
        try:
            result = self.run(argv, idempotent=False)
        except SchedulerError as exc:  # timed out: the job may exist all the same
            if exc.transient and (job := self._submitted(script_path)):
                return job
            raise SubmissionError(str(exc), argv=argv, transient=exc.transient) from exc
        if result.returncode != 0:
            if submission_unknown(result.stderr) and (job := self._submitted(script_path)):
                return job
            raise SubmissionError(
                f"sbatch refused submission {spec.sub} of {spec.batch_dir}: {result.stderr.strip()}\n"
                f"  command: {shlex.join(argv)}",
                argv=argv,
                stderr=result.stderr,
                transient=transient_failure(result.stderr),
            )
        return parse_sbatch(result.stdout)

    def _submitted(self, script_path: str) -> str | None:
        """After an sbatch whose answer was lost: the job that runs ``script_path``, if the
        controller did take it (each submission has its own script file)."""
        try:
            result = self.check(self._argv("squeue", "-h", "--me", "-o", "%F|%o"))
        except SchedulerError:
            return None
        jobs = [job for job, command in parse_job_commands(result.stdout).items() if command == script_path]
        return jobs[0] if jobs else None

    def transient(self, result: CommandResult) -> bool:
        if result.argv[:1] == ("sbatch",) and submission_unknown(result.stderr):
            return False  # retried only once we know the job was not created (see submit)
        return transient_failure(result.stderr)

    def explain_end(self, status: ElementStatus, stderr: str) -> ElementStatus:
        return explain_kill(status, stderr)

    def poll(self, job_ids: Sequence[str]) -> dict[str, ElementStatus]:
        if not job_ids:
            return {}
        # -t all: elements that ended stay visible (for MinJobAge), each with its own state
        result = self.run(
            self._argv("squeue", "-h", "-r", "-t", "all", "-j", ",".join(job_ids), "-o", SQUEUE_FORMAT)
        )
        if result.returncode == 0:
            statuses = parse_squeue(result.stdout)
        elif squeue_says_unknown(result.returncode, result.stderr):
            statuses = []
        else:
            raise SchedulerError(f"squeue failed: {result.stderr.strip()}", argv=list(result.argv))
        seen = {s.element_id.split("_", 1)[0] for s in statuses}
        gone = [j for j in job_ids if j not in seen]
        # squeue has no exit code for an element that failed: sacct has (once per element).
        # What was learnt of jobs no longer asked about is never read again: let it go.
        asked = set(job_ids)
        self._ends = {e: s for e, s in self._ends.items() if e.split("_", 1)[0] in asked}
        failed = {s.element_id for s in statuses if s.exit_unknown and s.element_id not in self._ends}
        ask = gone + sorted({eid.split("_", 1)[0] for eid in failed} - set(gone))
        if ask:  # left the queue: ask the accounting database (with -j, sacct searches all time)
            argv = self._argv("sacct", "-X", "-n", "-P", "-j", ",".join(ask), "-o", SACCT_FIELDS)
            try:
                accounted = parse_sacct(self.check(argv).stdout)
            except SchedulerError as exc:  # slurmdbd away: report what squeue knows; ask again later
                log.warning("sacct failed, the jobs %s stay unreported for now: %s", ",".join(ask), exc)
                accounted = []
            learnt = [s for s in accounted if s.element_id in failed and s.state.is_final]
            self._ends.update((s.element_id, s) for s in learnt)
            statuses += [s for s in accounted if s.element_id.split("_", 1)[0] in gone]
        return {s.element_id: with_exit_code(s, self._ends.get(s.element_id)) for s in statuses}

    def cancel(self, job_ids: Sequence[str], *, pending_only: bool = False) -> None:
        if not job_ids:
            return
        argv = self._argv("scancel", *(["--state=PENDING"] if pending_only else []), *job_ids)
        result = self.run(argv)
        if result.returncode != 0 and not scancel_says_gone(result.returncode, result.stderr):
            raise SchedulerError(f"scancel failed: {result.stderr.strip()}", argv=argv, stderr=result.stderr)

    def widen(self, job_id: str, max_running: int) -> None:
        argv = self._argv("scontrol", "update", f"JobId={job_id}", f"ArrayTaskThrottle={max_running}")
        result = self.run(argv)
        if not throttle_update_ok(result.returncode, result.stderr):
            raise SchedulerError(f"could not widen {job_id}: {result.stderr.strip()}", argv=argv)

    def _argv(self, command: str, *words: str) -> list[str]:
        """A SLURM command for this backend's cluster: ``-M NAME`` right after the program
        when ``clusters`` is set (see :func:`~corral.backends.slurm_text.cluster_argv`)."""
        return cluster_argv([command, *words], self.clusters)

    def shares_jobs_with(self, other: Backend) -> bool:
        """Jobs of another cluster cannot be dependencies: SLURM numbers jobs per cluster."""
        return super().shares_jobs_with(other) and other.clusters == self.clusters

    def user(self) -> str:
        """The user the scheduler sees: the one the transport's commands run as (over SSH,
        not this process's), asked once with ``id -un``."""
        if self._user is None:
            self._user = parse_user(self.check(["id", "-un"]).stdout)
        return self._user

    def queued_jobs(self) -> int:
        """How many jobs (array elements) the user has in the queue now."""
        result = self.check(self._argv("squeue", "-h", "-r", "--me", "-o", "%i"))
        return len(result.stdout.split())

    def discover_limits(self, resources: Resources) -> Limits:
        if self._config is None:
            self._config = parse_config(self.check(self._argv("scontrol", "show", "config")).stdout)
        max_array = env_int("CORRAL_MAX_ARRAY_SIZE") or config_int(self._config, "MaxArraySize") or 1001
        max_submit = env_int("CORRAL_MAX_SUBMIT_JOBS")
        if max_submit is None and enforces_limits(self._config):
            argv = [
                "sacctmgr",
                "-n",
                "-P",
                "show",
                "assoc",
                f"where user={self.user()}",
                *([f"cluster={self.clusters}"] if self.clusters else []),
                "format=MaxSubmit",
            ]
            result = self.run(argv)
            max_submit = parse_max_submit(result.stdout) if result.returncode == 0 else None
        slots = env_int("CORRAL_SLOTS")
        if slots is None:
            part = ["-p", resources.partition] if resources.partition else []
            output = self.check(self._argv("sinfo", "-h", *part, "-o", "%P|%C")).stdout
            allocated, idle, _, _ = parse_sinfo_cpus(output, resources.partition)
            slots = max(1, (allocated + idle) // (resources.cpus or 1))
        limits = Limits(max_array_size=max_array, max_submit_jobs=max_submit, slots=slots)
        log.info("SLURM limits for %s: %s", resources.partition or "the default partition", limits)
        return limits

    @classmethod
    def available(cls, transport: Transport) -> bool:
        """True when sbatch exists and the controller answers."""
        backend = cls(transport)
        try:
            result = backend.run(["scontrol", "ping"], timeout=10)
        except SchedulerError:
            return False
        return result.returncode == 0 and " is UP" in result.stdout
