"""The steps backend: the calls of a batch run as SLURM job steps inside the allocation this
process itself runs in (a driver started with ``sbatch -N4 -n8 driver.py``, or under
``salloc``), as many at once as the allocation has tasks, instead of as new array jobs.

It is the local backend (arrays, states, cancel, enforced time limits, requeue exit codes,
dependencies, slots), each of whose elements is started as ``srun`` of one job step::

    srun --ntasks=1 --nodes=1 --cpus-per-task=C --mem=M --exact --job-name=NAME /bin/bash SCRIPT

* ``--exact`` keeps a step to the CPUs it asks for, not its node's whole share of the job;
* ``--mem`` is always given when the allocation's memory is known: without it a step takes
  all of the job's memory on its node, and every further step there waits with "step creation
  temporarily disabled";
* C is the resources' ``cpus``, else the allocation's CPUs per task (``sbatch -c``), else 1;
* M is the resources' ``memory``, else the step's share of the allocation's: SLURM_MEM_PER_CPU
  x C, or SLURM_MEM_PER_NODE split among the CPUs of the fullest node, x C.

A slot is a CPU of the allocation (of its tasks: an overcommitted job, ``-n7`` on 3 CPUs, has
3). A step takes C slots, or more when its memory leaves room for fewer steps on the nodes than
its CPUs would, so that no step ever waits for another to end: ``sbatch -N4 -n8`` runs 8 steps
at once. ``CORRAL_SLOTS`` (or ``slots=``) sets how many slots there are. The allocation is read
once, at creation, from the SLURM_* variables by the pure :func:`parse_allocation`; outside an
allocation the backend refuses to be made. ``auto`` never chooses it.

srun forwards the time-limit warning (SIGUSR1) to the step. SIGTERM (cancel, the time limit)
makes srun end the step at once with SIGKILL ("forcing job termination"), so the worker has no
time to write results it holds (see the work dir's doc: those calls run again, as after any
kill); SLURM cancels the step of an srun killed outright within seconds. srun exits with the
task's exit code (99 asks for a requeue, as on the local backend), 128 + the signal for a task
a signal ended (read back as that signal by :func:`signalled`). Its own messages and
slurmstepd's go to the element's stderr, where :meth:`explain_end` reads a memory kill as
SLURM's backend does. Recorded in tests/data/steps.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ..environment import Environment
from ..errors import ConfigError, ResourceError
from ..job import ElementStatus
from ..resources import Resources
from ..store.protocol import Ranks
from ..transports.base import Transport
from .base import ArraySpec, Backend, Limits, env_int, warning_trap
from .local import LocalBackend
from .script import worker_lines
from .slurm_text import explain_kill

log = logging.getLogger(__name__)

_COUNT = re.compile(r"(\d+)(?:\(x(\d+)\))?")


@dataclass(frozen=True)
class Allocation:
    """The SLURM job this process runs in, as its environment describes it."""

    job_id: str
    tasks: int  # tasks of the whole allocation (SLURM_NTASKS)
    cpus_per_node: tuple[int, ...]  # CPUs the job has on each node, in node order
    cpus_per_task: int = 1  # sbatch -c
    mem_per_node: int | None = None  # MB (sbatch --mem)
    mem_per_cpu: int | None = None  # MB (sbatch --mem-per-cpu, or the cluster's default)

    @property
    def cpus(self) -> int:
        """The CPUs steps may use at once: the job's, at most its tasks' (an overcommitted
        job has more tasks than CPUs; a whole node, more CPUs than it asked for)."""
        return min(sum(self.cpus_per_node), self.tasks * self.cpus_per_task)

    def step_cpus(self, resources: Resources) -> int:
        """The CPUs one step asks for: the resources', else a task's."""
        return resources.cpus or self.cpus_per_task

    def step_memory(self, cpus: int) -> int | None:
        """A step's share of the allocation's memory in MB, None when it is not known: per
        CPU times its CPUs, the memory per node split among the CPUs of the fullest node."""
        if self.mem_per_cpu is not None:
            return self.mem_per_cpu * cpus
        if self.mem_per_node is not None:
            return max(1, self.mem_per_node // max(self.cpus_per_node) * cpus)
        return None

    def fits(self, cpus: int, memory: int | None) -> int:
        """How many steps of ``cpus`` CPUs and ``memory`` MB run at once: node by node, as
        many as its CPUs and its memory hold; at most as many as the tasks' CPUs allow."""
        count = 0
        for node_cpus in self.cpus_per_node:
            node_memory = self.mem_per_node or (self.mem_per_cpu or 0) * node_cpus
            by_memory = node_memory // memory if memory and node_memory else node_cpus
            count += min(node_cpus // cpus, by_memory)
        return min(count, self.cpus // cpus)


def parse_counts(text: str, name: str = "SLURM_TASKS_PER_NODE") -> tuple[int, ...]:
    """SLURM's compressed counts, one per node: ``"2(x4)"`` -> (2, 2, 2, 2), ``"3,2(x2)"`` ->
    (3, 2, 2). A ConfigError naming ``name`` for anything else. Pure."""
    counts: list[int] = []
    for part in text.strip().split(","):
        match = _COUNT.fullmatch(part.strip())
        if match is None:
            raise ConfigError(f"{name}={text!r} is not a list of counts such as '2(x4)' or '3,2(x2)'")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return tuple(counts)


def _count(env: Mapping[str, str], name: str) -> int | None:
    """The whole number in ``env[name]``, None when unset or empty."""
    value = env.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise ConfigError(f"{name}={value!r} is not a whole number")
    return int(value)


def parse_allocation(env: Mapping[str, str]) -> Allocation | None:
    """The allocation the SLURM_* variables of ``env`` describe; None outside one (no
    SLURM_JOB_ID). Without SLURM_JOB_CPUS_PER_NODE, each task has its CPUs, the tasks split
    evenly over the nodes. Pure."""
    job_id = env.get("SLURM_JOB_ID", "").strip()
    if not job_id:
        return None
    nodes = _count(env, "SLURM_JOB_NUM_NODES") or _count(env, "SLURM_NNODES") or 1
    per_task = _count(env, "SLURM_CPUS_PER_TASK") or 1
    tasks_text = env.get("SLURM_TASKS_PER_NODE", "").strip()
    per_node = parse_counts(tasks_text) if tasks_text else ()
    tasks = _count(env, "SLURM_NTASKS") or _count(env, "SLURM_NPROCS") or sum(per_node) or nodes
    cpus_text = env.get("SLURM_JOB_CPUS_PER_NODE", "").strip()
    if cpus_text:
        cpus = parse_counts(cpus_text, "SLURM_JOB_CPUS_PER_NODE")
    else:
        cpus = tuple(n * per_task for n in per_node) or (-(-tasks // nodes) * per_task,) * nodes
    return Allocation(
        job_id=job_id,
        tasks=tasks,
        cpus_per_node=cpus,
        cpus_per_task=per_task,
        mem_per_node=_count(env, "SLURM_MEM_PER_NODE") or None,  # 0: the whole node, no share known
        mem_per_cpu=_count(env, "SLURM_MEM_PER_CPU") or None,
    )


def step_shape(allocation: Allocation, resources: Resources) -> tuple[int, int | None]:
    """The CPUs and memory (MB, None when unknown) a step with ``resources`` asks for. Pure."""
    cpus = allocation.step_cpus(resources)
    return cpus, resources.memory or allocation.step_memory(cpus)


def step_argv(
    allocation: Allocation, spec: ArraySpec, command: Sequence[str], *, srun: str = "srun"
) -> list[str]:
    """The ``srun`` command that runs ``command`` as one job step of ``allocation`` with the
    resources of ``spec``; the environment's ``srun`` options come last, verbatim. Pure."""
    res = spec.resources
    cpus, memory = step_shape(allocation, res)
    argv = [srun, "--ntasks=1", "--nodes=1", f"--cpus-per-task={cpus}"]
    argv += [f"--mem={memory}"] if memory else []
    argv += ["--exact"]
    argv += [f"--gpus={res.gpus}"] if res.gpus else []
    argv += [f"--job-name={spec.job_name}"] if spec.job_name else []
    argv += [f"--{k}" if v is None else f"--{k}={v}" for k, v in spec.environment.srun or ()]
    return [*argv, *command]


def check_step_resources(resources: Resources) -> None:
    """A ResourceError for what one job step of one task cannot be: several tasks or nodes.
    Options that pick an allocation (partition, account, qos, constraint) have no say over
    the one this process runs in: they are logged and left out. Pure but for the log."""
    for name in ("tasks", "nodes"):
        if (getattr(resources, name) or 1) > 1:
            raise ResourceError(
                f"{name}={getattr(resources, name)}: the steps backend runs each element as a job "
                "step of one task on one node; use backend='slurm' for jobs of several"
            )
    ignored = [n for n in ("partition", "account", "qos", "constraint") if getattr(resources, n)]
    if ignored or resources.extra:
        names = ", ".join(ignored + [k for k, _ in resources.extra])
        log.info("steps backend: %s apply to allocations, not to job steps; left out", names)


def signalled(status: ElementStatus) -> ElementStatus:
    """``status`` with srun's exit code for a task a signal ended (128 + the signal, which it
    also reports as "task 0: Killed") read as that signal. Pure."""
    code = status.exit_code
    if code is None or not 128 < code < 160:
        return status
    return replace(status, exit_code=None, signal=code - 128)


class StepsBackend(LocalBackend):
    """Runs the elements of each array as SLURM job steps of the allocation this process
    runs in, at most as many at once as its CPUs and memory hold (see the module doc)."""

    name = "steps"

    def __init__(self, transport: Transport | None = None, slots: int | None = None) -> None:
        allocation = parse_allocation(os.environ)
        if allocation is None:
            raise ConfigError(
                "backend='steps' runs calls as job steps of the SLURM allocation this process runs "
                "in, and there is none (SLURM_JOB_ID is not set): run the script under sbatch or "
                "salloc, or use backend='slurm' to submit jobs of their own"
            )
        srun = shutil.which("srun")
        if srun is None:
            raise ConfigError("backend='steps' needs SLURM's srun, which is not on PATH")
        self.allocation = allocation
        self.srun = srun
        super().__init__(transport, slots=slots or env_int("CORRAL_SLOTS") or allocation.cpus)
        log.info("steps backend: allocation %s, %d slot(s): %s", allocation.job_id, self.slots, allocation)

    def element_slots(self, resources: Resources) -> int:
        """A slot is a CPU of the allocation; a step takes as many as leave room for no more
        steps of its kind than the nodes hold (its CPUs, unless its memory fits fewer)."""
        fits = self.allocation.fits(*step_shape(self.allocation, resources))
        return max(1, -(-self.allocation.cpus // max(1, fits)))

    def limits(self, resources: Resources) -> Limits:
        check_step_resources(resources)
        cpus, memory = step_shape(self.allocation, resources)
        if not self.allocation.fits(cpus, memory):
            raise ResourceError(
                f"a job step of {cpus} CPU(s) and {memory or 'any'} MB fits on no node of allocation "
                f"{self.allocation.job_id} (CPUs per node {self.allocation.cpus_per_node}, memory "
                f"{self.allocation.mem_per_node or self.allocation.mem_per_cpu or 'unknown'} MB per "
                f"{'node' if self.allocation.mem_per_node else 'CPU'}): ask for less"
            )
        return super().limits(resources)

    def poll(self, job_ids: Sequence[str]) -> dict[str, ElementStatus]:
        return {eid: signalled(status) for eid, status in super().poll(job_ids).items()}

    def ranks(self, environment: Environment, resources: Resources, python: str) -> Ranks | None:
        return Backend.ranks(self, environment, resources, python)  # per_task: one task per step

    def submit_argv(self, spec: ArraySpec, script_path: str, log_pattern: tuple[str, str]) -> list[str]:
        return step_argv(self.allocation, spec, ["/bin/bash", script_path], srun=self.srun)

    def render(self, spec: ArraySpec) -> str:
        res = spec.resources
        limit = f"time limit {res.time}, enforced by corral" if res.time else "no time limit"
        step = step_argv(self.allocation, spec, ["/bin/bash", "<this script>"], srun="srun")
        return "\n".join(
            [
                "#!/bin/bash",
                f"# corral steps job: submission {spec.sub}, {spec.elements} element(s) as job steps "
                f"of allocation {self.allocation.job_id}, {limit}",
                f"# each element runs as: {shlex.join(step)}",
                *warning_trap(spec),
                *worker_lines(spec, '"$CORRAL_ARRAY_TASK_ID"', '"$CORRAL_ELEMENT_ID"'),
                "",
            ]
        )

    def explain_end(self, status: ElementStatus, stderr: str) -> ElementStatus:
        return explain_kill(status, stderr)
