"""Pure translation between corral and SLURM's text: job scripts in, command output out.

Every function here is a pure function of its input, tested on output recorded from a real
SLURM 22.05 cluster (tests/data/slurm/).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

from .. import directives
from ..errors import SchedulerError
from ..job import Condition, ElementStatus, JobState
from ..resources import RESERVED_OPTIONS, Resources
from .base import ArraySpec, warning_trap
from .script import step_words, worker_lines

#: SLURM's long state names (squeue %T, sacct State) -> corral's states.
SLURM_STATES: dict[str, JobState] = {
    "PENDING": JobState.PENDING,
    "CONFIGURING": JobState.RUNNING,  # nodes allocated, booting
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,  # epilog still running; the outcome is being written
    "STAGE_OUT": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "SUSPENDED": JobState.SUSPENDED,
    "STOPPED": JobState.SUSPENDED,
    "REQUEUED": JobState.REQUEUED,
    "REQUEUE_FED": JobState.REQUEUED,
    "REQUEUE_HOLD": JobState.REQUEUED,
    "SPECIAL_EXIT": JobState.REQUEUED,
    "RESV_DEL_HOLD": JobState.PENDING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
    "TIMEOUT": JobState.TIMEOUT,
    "DEADLINE": JobState.DEADLINE,
    "OUT_OF_MEMORY": JobState.OUT_OF_MEMORY,
    "NODE_FAIL": JobState.NODE_FAIL,
    "BOOT_FAIL": JobState.BOOT_FAIL,
    "PREEMPTED": JobState.PREEMPTED,
}

DEPENDENCY_TYPES = {
    Condition.OK: "afterok",
    Condition.ANY: "afterany",
    Condition.NOTOK: "afternotok",
    Condition.STARTED: "after",  # SLURM: once each has started, or was cancelled
}

SQUEUE_FORMAT = "%i|%T|%N|%r"
SACCT_FIELDS = "JobID,State,ExitCode,NodeList"


def slurm_state(text: str) -> JobState:
    """``"CANCELLED by 0"`` -> CANCELLED; an unknown name is reported as LOST, not guessed."""
    word = text.strip().split(" ", 1)[0].rstrip("+")
    return SLURM_STATES.get(word, JobState.LOST)


def format_time(limit: timedelta) -> str:
    """A timedelta as sbatch's ``D-HH:MM:SS``, rounded up to whole seconds."""
    total = int(-(-limit.total_seconds() // 1))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{seconds:02d}"


def check_resources(resources: Resources) -> None:
    """ResourceError for what sbatch would misread: an ``extra`` option that is, or
    abbreviates, an option corral sets (``--arr`` is ``--array`` to sbatch). Pure; the
    backend asks before anything is written."""
    directives.check_extra(resources.extra, RESERVED_OPTIONS, "SLURM")


def sbatch_options(spec: ArraySpec) -> list[str]:
    """The ``--option=value`` words for a submission's ``#SBATCH`` lines. Every value is one
    word (Resources checks them) and the job name is reduced to safe characters."""
    res = spec.resources
    check_resources(res)
    throttle = f"%{spec.max_running}" if spec.max_running else ""
    name = directives.job_name(res.job_name or spec.job_name)
    options = [f"--job-name={name}", f"--array=0-{spec.elements - 1}{throttle}"]
    if res.time is not None:
        options.append(f"--time={format_time(res.time)}")
    pairs = [
        ("cpus-per-task", res.cpus),
        ("mem", f"{res.memory}M" if res.memory else None),
        ("gpus", res.gpus),
        ("nodes", res.nodes),
        ("ntasks", res.tasks),
        ("partition", res.partition),
        ("account", res.account),
        ("qos", res.qos),
        ("constraint", res.constraint),
    ]
    options += [f"--{name}={value}" for name, value in pairs if value is not None]
    # Requeueable, so that a preempted job is requeued rather than cancelled and a worker
    # can requeue its element from a checkpoint; warned (SIGUSR1, to the worker the batch
    # shell execs) before the time limit.
    options.append("--requeue" if res.requeues else "--no-requeue")
    if (warning := res.warning_seconds()) is not None:
        options.append(f"--signal=B:USR1@{warning}")
    options += [f"--{name}" if value is None else f"--{name}={value}" for name, value in res.extra]
    clauses = (
        [f"{DEPENDENCY_TYPES[c]}:{':'.join(ids)}" for c, ids in spec.dependency.clauses()]
        if spec.dependency
        else []
    )
    clauses += ["singleton"] if res.singleton else []
    if clauses:  # all of them must be met (a comma: and)
        options.append(f"--dependency={','.join(clauses)}")
    if spec.dependency is not None and spec.dependency.clauses():
        # A dependency that can never be met drops the job instead of leaving it pending forever.
        options.append("--kill-on-invalid-dep=yes")
    return options


def render_script(spec: ArraySpec) -> str:
    """The batch script. Paths are shell-quoted, each on one line; user data never appears
    in it (calls travel in files), and neither does the caller's environment."""
    lines = [
        "#!/bin/bash",
        f"# corral: batch {directives.comment(spec.batch_dir.rsplit('/', 1)[-1])}, "
        f"submission {spec.sub}, {spec.elements} array element(s)",
        *(f"#SBATCH {option}" for option in sbatch_options(spec)),
        *warning_trap(spec),
        *worker_lines(
            spec,
            '"$SLURM_ARRAY_TASK_ID"',
            '"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"',
            step_words(spec.environment, spec.resources.cpus),
        ),
        "",
    ]
    return "\n".join(lines)


def cluster_argv(argv: list[str], clusters: str | None) -> list[str]:
    """``argv`` with ``-M clusters`` after the program's name (every SLURM client command
    takes it there); as it is without ``clusters``."""
    return [argv[0], "-M", clusters, *argv[1:]] if clusters else list(argv)


def parse_sbatch(stdout: str) -> str:
    """``sbatch --parsable`` prints ``<id>`` or ``<id>;<cluster>``."""
    first = stdout.strip().splitlines()[0] if stdout.strip() else ""
    job_id = first.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise SchedulerError(f"sbatch printed no job id: {stdout!r}")
    return job_id


def expand_array_id(text: str) -> list[str]:
    """``"123_4"`` -> [``"123_4"``]; ``"123_[0-2,7%4]"`` -> [``"123_0"``, ``"123_1"``, ``"123_2"``,
    ``"123_7"``]; a plain ``"123"`` stays as it is."""
    job, sep, rest = text.strip().partition("_")
    if not sep:
        return [job]
    if not rest.startswith("["):
        return [f"{job}_{rest}"]
    body = rest.strip("[]").split("%", 1)[0]
    ids: list[str] = []
    for part in filter(None, body.split(",")):
        low, _, high = part.partition("-")
        step = 1
        if ":" in high:
            high, step_text = high.split(":", 1)
            step = int(step_text)
        ids += [f"{job}_{i}" for i in range(int(low), int(high or low) + 1, step)]
    return ids


def _rows(stdout: str) -> Iterator[tuple[str, list[str]]]:
    """(element id, the other fields) per element of ``|``-separated status lines. With
    ``-M`` and without ``-h``, squeue heads its lines with ``CLUSTER: name``: not a job."""
    for line in stdout.splitlines():
        if line.startswith("CLUSTER: "):
            continue
        fields = line.strip().split("|")
        if len(fields) >= 4:
            for eid in expand_array_id(fields[0]):
                yield eid, fields[1:4]


def parse_squeue(stdout: str) -> list[ElementStatus]:
    """Lines of ``squeue -h -r -o '%i|%T|%N|%r'``."""
    return [
        ElementStatus(eid, slurm_state(state), node or None, "" if reason == "None" else reason)
        for eid, (state, node, reason) in _rows(stdout)
    ]


def squeue_says_unknown(returncode: int, stderr: str) -> bool:
    """squeue exits 1 with "Invalid job id" when none of the ids is known any more."""
    return returncode != 0 and "Invalid job id" in stderr


def parse_sacct(stdout: str) -> list[ElementStatus]:
    """Lines of ``sacct -X -n -P -o JobID,State,ExitCode,NodeList``."""
    return [
        ElementStatus(
            eid,
            slurm_state(state),
            None if node in ("", "None assigned") else node,
            "",
            *parse_exit_code(exit_code),
        )
        for eid, (state, exit_code, node) in _rows(stdout)
    ]


def parse_exit_code(text: str) -> tuple[int | None, int | None]:
    """sacct's ExitCode ``"3:0"`` (exit code 3) or ``"0:9"`` (signal 9) -> (exit code,
    signal); the signal wins, as the process had no exit code of its own then."""
    code, _, sig = text.strip().partition(":")
    if not (code.isdigit() and sig.isdigit()):
        return None, None
    if int(sig):
        return None, int(sig)
    return int(code), None


def with_exit_code(status: ElementStatus, accounted: ElementStatus | None) -> ElementStatus:
    """squeue's ``status`` with the exit code or signal of sacct's ``accounted`` record of the
    same element, which makes squeue's reason ``NonZeroExitCode`` redundant. Pure."""
    if accounted is None or not status.exit_unknown:
        return status
    reason = "" if status.reason == "NonZeroExitCode" else status.reason
    return replace(status, reason=reason, exit_code=accounted.exit_code, signal=accounted.signal)


def parse_config(stdout: str) -> dict[str, str]:
    """``scontrol show config`` -> {key: value}."""
    config: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            config[key.strip()] = value.strip()
    return config


def parse_sinfo_cpus(stdout: str, partition: str | None = None) -> tuple[int, int, int, int]:
    """``sinfo -h -o %P|%C`` -> (allocated, idle, other, total) CPUs of ``partition``, or of
    the default partition (marked ``*``) when None. Partitions often share nodes, so adding
    up every line would count those nodes' CPUs once per partition. Lines of a bare ``%C``
    (no partition name) are summed."""
    rows: list[tuple[str | None, list[int]]] = []
    for line in stdout.split():
        name, _, cpus = line.rpartition("|")
        parts = cpus.split("/")
        if len(parts) == 4 and all(p.isdigit() for p in parts):
            rows.append((name or None, [int(p) for p in parts]))
    named = [r for r in rows if r[0] is not None]
    if named:
        wanted = [r for r in named if r[0] == partition or (partition is None and str(r[0]).endswith("*"))]
        rows = wanted or ([] if partition else named[:1])
    totals = [sum(r[1][i] for r in rows) for i in range(4)]
    return totals[0], totals[1], totals[2], totals[3]


def parse_max_submit(stdout: str) -> int | None:
    """``sacctmgr -n -P show assoc ... format=MaxSubmit``: the smallest limit set, or None."""
    limits = [int(v) for v in (line.strip() for line in stdout.splitlines()) if v.isdigit()]
    return min(limits) if limits else None


def parse_user(stdout: str) -> str:
    """``id -un``: the one user name it printed; a SchedulerError for anything else."""
    words = stdout.split()
    if len(words) != 1:
        raise SchedulerError(f"id -un printed {stdout!r}, not one user name")
    return words[0]


def enforces_limits(config: dict[str, str]) -> bool:
    """Association limits such as MaxSubmitJobs apply only when AccountingStorageEnforce
    includes ``limits`` (``safe`` implies it)."""
    words = config.get("AccountingStorageEnforce", "").lower().replace(" ", "").split(",")
    return "limits" in words or "safe" in words


def scancel_says_gone(returncode: int, stderr: str) -> bool:
    """scancel fails for jobs that have already ended; for a cancel, that is success."""
    return returncode != 0 and all(
        "Invalid job id" in line or "already completing or completed" in line
        for line in stderr.strip().splitlines()
    )


def throttle_update_ok(returncode: int, stderr: str) -> bool:
    """``scontrol update JobId=.. ArrayTaskThrottle=..`` exits non-zero when some elements
    have already ended, while the others took the update ("No error")."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return returncode == 0 or (
        bool(lines) and all("No error" in line or "already finished" in line for line in lines)
    )


_INT = re.compile(r"\d+")


def config_int(config: dict[str, str], key: str) -> int | None:
    match = _INT.match(config.get(key, ""))
    return int(match.group()) if match else None


#: Messages of SLURM's client commands that mean the controller (or slurmdbd) is busy,
#: restarting or out of reach: the same command may work a little later.
TRANSIENT_MESSAGES = (
    "Unable to contact slurm controller",
    "Socket timed out on send/recv",
    "Zero Bytes were transmitted or received",
    "Resource temporarily unavailable",
    "temporarily unable to accept job",
    "Transport endpoint is not connected",
    "backup controller in standby mode",
    "Communication connection failure",
    "slurm_persist_conn_open",
    "Connection refused",
    "Unexpected message received",  # scontrol update, while slurmctld is down
    # Any command with -M while slurmctld is down (an unknown cluster: PERMANENT_MESSAGES)
    "can't be reached now, or it is an invalid entry for --cluster",
)
#: Of those, the ones after which a submission may still have reached the controller.
AMBIGUOUS_MESSAGES = ("Socket timed out on send/recv", "Zero Bytes were transmitted or received")


#: Messages that make a failure permanent whatever else the command printed: with ``-M``, a
#: cluster slurmdbd does not know also gets "can't be reached now" (sbatch_clusters_unknown).
PERMANENT_MESSAGES = ("known by database",)


def transient_failure(stderr: str) -> bool:
    """True when a failed command's stderr says SLURM is busy or out of reach."""
    if any(message in stderr for message in PERMANENT_MESSAGES):
        return False
    return any(message in stderr for message in TRANSIENT_MESSAGES)


def submission_unknown(stderr: str) -> bool:
    """True when a failed sbatch may nevertheless have submitted its job (the reply was lost)."""
    return any(message in stderr for message in AMBIGUOUS_MESSAGES)


def parse_job_commands(stdout: str) -> dict[str, str]:
    """``squeue -h -o %F|%o`` lines -> {array job id: the script it runs}."""
    found: dict[str, str] = {}
    for line in stdout.splitlines():
        job, sep, command = line.partition("|")
        if sep and job.strip().isdigit():
            found.setdefault(job.strip(), command.strip())
    return found


#: slurmstepd's words when JobAcctGatherParams=OverMemoryKill stops a step (bytes used > limit).
_MEMORY_KILL = re.compile(r"exceeded memory limit \((\d+) > (\d+)\), being killed")
#: ... and when the cgroup's OOM killer did (task/cgroup with ConstrainRAMSpace).
#: slurmstepd's word when SLURM cancels a job step: ``*** STEP 4242.0 ON n1 CANCELLED AT ...``.
_STEP_CANCELLED = re.compile(r"\*\*\* STEP \d+\.\d+ ON \S+ CANCELLED AT ")
_OOM_KILL = re.compile(r"Detected \d+ oom[-_]kill event")


def explain_kill(status: ElementStatus, stderr: str) -> ElementStatus:
    """What slurmstepd's messages in an element's stderr say of its end, where SLURM's state
    does not: an element SLURM stopped for its memory ends FAILED or CANCELLED when the
    accounting plugin (not the cgroup) killed it, reported here as OUT_OF_MEMORY with the
    memory used and the limit; a FAILED element whose job step SLURM cancelled (a worker run
    as an srun step, preempted) is PREEMPTED. Pure."""
    if not status.state.is_final or status.state is JobState.COMPLETED:
        return status
    if match := _MEMORY_KILL.search(stderr):
        used, limit = (int(g) / 2**20 for g in match.groups())
        reason = f"used {used:.0f} MB of memory, {limit:.0f} MB requested"
        return ElementStatus(status.element_id, JobState.OUT_OF_MEMORY, status.node, reason)
    if status.state is not JobState.OUT_OF_MEMORY and _OOM_KILL.search(stderr):
        return ElementStatus(
            status.element_id, JobState.OUT_OF_MEMORY, status.node, "killed by the OOM killer"
        )
    if status.state is JobState.FAILED and _STEP_CANCELLED.search(stderr):
        # The worker ran as a job step (srun=): preemption cancels the step, srun exits 15
        # and the job ends FAILED instead of requeued. Not the call's fault: run it again.
        reason = "its job step was cancelled by SLURM (preempted)"
        return ElementStatus(status.element_id, JobState.PREEMPTED, status.node, reason)
    return status
