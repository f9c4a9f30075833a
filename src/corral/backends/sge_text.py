"""Pure translation between corral and Sun Grid Engine's text: job scripts in, command output out.

Every function here is a pure function of its input, tested on output recorded from a real
Son of Grid Engine 8.1.9 cell (tests/data/sge/). SGE numbers array tasks from 1; corral's
element ``<job>_<k>`` is SGE task ``k + 1`` of job ``<job>``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from .. import directives
from ..errors import ResourceError, SchedulerError
from ..job import ElementStatus, JobState
from ..resources import Resources
from .base import ArraySpec
from .script import worker_lines

#: qstat's state letters, most telling first: the first letter a task's state holds decides
#: ("dr", a running task being deleted, is still running; "hqw" is pending). "z" (zombie:
#: ended, kept for a while by qmaster) is not here: how a task ended is qacct's to say.
QSTAT_LETTERS: tuple[tuple[str, JobState], ...] = (
    ("E", JobState.FAILED),  # error state (Eqw): SGE could not start it; it waits for qmod -cj
    ("s", JobState.SUSPENDED),  # suspended with qmod -sj
    ("S", JobState.SUSPENDED),  # its queue is suspended
    ("T", JobState.SUSPENDED),  # its queue passed a suspend threshold
    ("r", JobState.RUNNING),
    ("t", JobState.RUNNING),  # being transferred to its host
    ("d", JobState.CANCELLED),  # deleted before it started
    ("R", JobState.REQUEUED),  # restarted (Rq: waiting to run again)
    ("h", JobState.PENDING),  # on hold
    ("q", JobState.PENDING),
    ("w", JobState.PENDING),
)

#: qacct's ``failed`` codes that decide the state themselves; 0 leaves it to ``exit_status``,
#: and any other code means the job failed before or while starting (e.g. 26: the output file
#: could not be opened; 28: no such working directory).
QACCT_FAILED: dict[int, JobState] = {
    24: JobState.REQUEUED,  # migrating (checkpointing)
    25: JobState.REQUEUED,  # rescheduled: it runs again under the same id
    37: JobState.TIMEOUT,  # qmaster/execd enforced h_rt, h_cpu or h_vmem (see qacct_status)
    100: JobState.FAILED,  # "assumedly after job": the script was killed by a signal (qdel too)
}

#: Words of a failed command's output that mean qmaster is busy, restarting or out of reach.
TRANSIENT_MESSAGES = ("unable to contact qmaster", "unable to send message to qmaster", "commlib error",
                      "failed receiving gdi request", "qmaster is busy", "got send error")  # fmt: skip

#: qsub options corral sets itself (or models as a typed field): not allowed in ``extra``.
RESERVED_OPTIONS = frozenset(
    {"t", "tc", "o", "e", "j", "wd", "cwd", "b", "shell", "pe", "q", "terse", "sync"}
)

_JOB_NAME_FORBIDDEN = re.compile(r"[/:@\\*?\s]")
_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
_UNITS.update({"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4})


def job_name(name: str) -> str:
    """A job name SGE accepts: no ``/ : @ \\ * ?`` or blanks, and not starting with a digit."""
    cleaned = _JOB_NAME_FORBIDDEN.sub("_", name) or "corral"
    return f"_{cleaned}" if cleaned[0].isdigit() else cleaned


def check_resources(res: Resources) -> None:
    """ResourceError for what SGE cannot express, or an ``extra`` option corral sets itself
    (qsub takes option names whole: no abbreviations). Pure; the backend asks before
    anything is written."""
    for field, value, hint in (
        ("gpus", res.gpus, "ask for your cluster's GPU resource with extra={'l': 'gpu=1'}"),
        ("qos", res.qos, "SGE has no QOS"),
        ("constraint", res.constraint, "ask for host resources with extra={'l': 'avx512=true'}"),
    ):
        if value is not None:
            raise ResourceError(f"{field}={value!r} cannot be expressed on SGE: {hint}")
    if (res.nodes or 1) > 1 or (res.tasks or 1) > 1:
        raise ResourceError("SGE elements run on one host: nodes and tasks above 1 cannot be expressed")
    if res.singleton:
        raise ResourceError(
            "singleton=True cannot be expressed on SGE: it has no 'one job of this name at a time' "
            "dependency (use SLURM or the local backend, or chain the jobs with after())"
        )
    for key, _ in res.extra:
        if key in RESERVED_OPTIONS:
            raise ResourceError(f"extra option {key!r} is set by corral or has a typed field on SGE")


def qsub_options(spec: ArraySpec, parallel_env: str = "smp") -> list[str]:
    """The option words of the script's ``#$`` lines; what SGE cannot express is a
    ResourceError here (see check_resources). Every value is one word (Resources checks
    them) and the job name is reduced to safe characters."""
    res = spec.resources
    check_resources(res)
    if spec.environment.srun is not None or spec.environment.per_task:
        what = "srun=" if spec.environment.srun is not None else "per_task="
        raise ResourceError(f"{what} needs SLURM's srun: Grid Engine jobs cannot run job steps")
    name = job_name(directives.job_name(res.job_name or spec.job_name))
    # -V: the job gets the environment of the process that submits it, as SLURM's do
    options = ["-S /bin/bash", f"-N {name}", f"-t 1-{spec.elements}", "-V"]
    options += [f"-tc {spec.max_running}"] if spec.max_running else []
    cpus = res.cpus or 1
    if res.time is not None:
        options.append(f"-l h_rt={int(-(-res.time.total_seconds() // 1))}")
    if res.memory is not None:  # h_vmem counts per slot; Resources.memory is per element
        options.append(f"-l h_vmem={-(-res.memory // cpus)}M")
    if cpus > 1:
        options.append(f"-pe {parallel_env} {cpus}")
    options += [f"-{flag} {value}" for flag, value in (("q", res.partition), ("A", res.account)) if value]
    options += [f"-{key}" if value is None else f"-{key} {value}" for key, value in res.extra]
    if spec.dependency is not None:  # SGE holds for whole jobs, whatever their end
        ids = [j for _, clause in spec.dependency.clauses() for j in clause]
        jobs = dict.fromkeys(j.split("_", 1)[0] for j in ids)
        options.append(f"-hold_jid {','.join(jobs)}")
    return options


def directive_prefix(spec: ArraySpec) -> str:
    """What starts the script's option lines: SGE's ``#$``, unless a line of the job's shell
    command starts with it (qsub reads options from every line of the script, the command's
    here-document included); then a prefix none of its lines starts with, which the submit
    command names with ``qsub -C``."""
    lines = (spec.command or "").splitlines()
    prefix = "#$"
    if any(line.startswith(prefix) for line in lines):
        prefix = "#corral$"
        while any(line.startswith(prefix) for line in lines):
            prefix += "$"
    return prefix


def render_script(spec: ArraySpec, parallel_env: str = "smp") -> str:
    """The job script. It takes the element's stdout and stderr paths, with ``{job}`` and
    ``{index}`` in them, as $1 and $2 (SGE's own ``-o`` knows only 1-based task ids), and
    then runs the worker. User data never appears in it, nor does the caller's environment."""
    lines = [
        "#!/bin/bash",
        f"# corral: batch {directives.comment(spec.batch_dir.rsplit('/', 1)[-1])}, "
        f"submission {spec.sub}, {spec.elements} array element(s)",
        *(f"{directive_prefix(spec)} {option}" for option in qsub_options(spec, parallel_env)),
        "index=$((SGE_TASK_ID - 1))  # SGE counts tasks from 1, corral its elements from 0",
        'out=${1//"{job}"/$JOB_ID} err=${2//"{job}"/$JOB_ID}',
        'exec >>"${out//"{index}"/$index}" 2>>"${err//"{index}"/$index}" || exit 1',
        "# SGE's own file keeps what went wrong before this point; empty, it is not needed",
        '[[ -f $SGE_STDOUT_PATH && ! -s $SGE_STDOUT_PATH ]] && rm -f -- "$SGE_STDOUT_PATH"',
        *worker_lines(spec, '"$index"', '"${JOB_ID}_$index"'),
        "",
    ]
    return "\n".join(lines)


def parse_qsub(stdout: str) -> str:
    """``qsub -terse`` prints ``<id>`` for a job and ``<id>.1-N:1`` for an array."""
    for line in stdout.splitlines():
        match = re.fullmatch(r"(\d+)(?:\.\S+)?", line.strip())
        if match:
            return match.group(1)
    raise SchedulerError(f"qsub printed no job id: {stdout!r}")


def expand_tasks(text: str) -> list[int]:
    """``"3-6:1,9"`` -> [3, 4, 5, 6, 9]; an empty text (a job that is no array) -> [1]."""
    tasks: list[int] = []
    for part in filter(None, text.strip().split(",")):
        span, _, step = part.partition(":")
        low, _, high = span.partition("-")
        tasks += range(int(low), int(high or low) + 1, int(step or 1))
    return tasks or [1]


def task_ranges(tasks: list[int]) -> list[str]:
    """[3, 4, 5, 9] -> ["3-5", "9"]: task ranges for ``qdel JOB.RANGE``."""
    ranges: list[str] = []
    for task in sorted(set(tasks)):
        if ranges and ranges[-1].rpartition("-")[2] == str(task - 1):
            ranges[-1] = f"{ranges[-1].partition('-')[0]}-{task}"
        else:
            ranges.append(str(task))
    return ranges


def element(job: str, task: int) -> str:
    """The corral element id of SGE task ``task`` of ``job``."""
    return f"{job}_{task - 1}"


def qstat_state(letters: str) -> JobState:
    """``"hqw"`` -> PENDING, ``"dr"`` -> RUNNING; unknown letters are LOST, not guessed."""
    return next((state for letter, state in QSTAT_LETTERS if letter in letters), JobState.LOST)


DELETING = "being deleted"  # the reason given to a running task that qdel is killing


def qstat_reason(letters: str, job: str) -> str:
    """A few words on a live task's state letters, for the user."""
    if "E" in letters:
        return f"error state: `qstat -j {job}` says why"
    return DELETING if "d" in letters else "held" if "h" in letters and letters.endswith("w") else ""


def parse_qstat(xml_text: str) -> tuple[list[ElementStatus], list[str]]:
    """``qstat -xml -s prsz``: the live elements, and the ids of elements that ended
    (zombies: SGE still lists them for a while; qacct tells how they ended)."""
    live: list[ElementStatus] = []
    ended: list[str] = []
    for job in ET.fromstring(xml_text).iter("job_list"):
        number = job.findtext("JB_job_number", "").strip()
        letters = job.findtext("state", "").strip()
        node = job.findtext("queue_name", "").strip().partition("@")[2] or None
        for task in expand_tasks(job.findtext("tasks", "")):
            if letters == "z":
                ended.append(element(number, task))
            else:
                why = qstat_reason(letters, number)
                live.append(ElementStatus(element(number, task), qstat_state(letters), node, why))
    return live, ended


@dataclass(frozen=True)
class AccountingRecord:
    """One task's record in SGE's accounting file, as ``qacct -j`` prints it."""

    element_id: str
    node: str | None
    failed: int  # 0 when SGE saw no failure
    failed_text: str
    exit_status: int
    slots: int
    max_vmem: float  # bytes
    category: str  # the job's requests, e.g. "-l h_rt=60,h_vmem=100M -pe smp 2"


def parse_qacct(stdout: str) -> list[AccountingRecord]:
    """``qacct -j JOB``: one record per ended task, in the order they were written (a
    rescheduled task has several; the last one counts)."""
    records = []
    for block in re.split(r"(?m)^=+\s*$", stdout):
        pairs = (line.partition(" ") for line in block.splitlines())
        fields = {key: value.strip() for key, _, value in pairs if key}
        if "jobnumber" not in fields:
            continue
        task = fields.get("taskid", "undefined")
        code, _, text = fields.get("failed", "0").partition(":")
        records.append(
            AccountingRecord(
                element(fields["jobnumber"], int(task) if task.isdigit() else 1),
                fields.get("hostname") or None,
                int(code.strip() or 0),
                text.strip(),
                int(fields.get("exit_status", "0").split()[0]),
                int(fields.get("slots", "1") or 1),
                memory_bytes(fields.get("maxvmem", "0")),
                fields.get("category", "NONE"),
            )
        )
    return records


def memory_bytes(text: str) -> float:
    """SGE memory -> bytes: qacct's ``"329.891MB"`` (powers of 1024), requests such as
    ``"100M"`` (upper case: powers of 1024) or ``"1g"`` (lower case: powers of 1000)."""
    match = re.fullmatch(r"([\d.]+)\s*([kKmMgGtT]?)(B?)", text.strip())
    if not match:
        return 0.0
    unit = match.group(2).upper() if match.group(3) else match.group(2)
    return float(match.group(1)) * _UNITS[unit]


def requests(category: str) -> dict[str, str]:
    """The ``-l`` requests of a qacct category: ``"-l h_rt=3,h_vmem=1G -pe smp 2"`` ->
    {"h_rt": "3", "h_vmem": "1G"}."""
    words = category.split()
    found: dict[str, str] = {}
    for flag, value in zip(words, words[1:], strict=False):
        for item in value.split(",") if flag == "-l" else ():
            key, _, amount = item.partition("=")
            found[key] = amount
    return found


def qacct_status(record: AccountingRecord, cancelled: bool = False) -> ElementStatus:
    """How a task ended. ``cancelled``: corral deleted it, so a kill by signal is CANCELLED
    (qacct keeps no mark of qdel). A limit kill (failed 37) is OUT_OF_MEMORY when the task
    used at least its h_vmem (per slot, so times its slots), TIMEOUT otherwise."""
    state = QACCT_FAILED.get(record.failed, JobState.FAILED)
    reason = f"failed {record.failed}: {record.failed_text}"
    asked = requests(record.category)
    code: int | None = record.exit_status
    killed_by: int | None = None
    if record.failed == 0:
        state = JobState.COMPLETED if record.exit_status == 0 else JobState.FAILED
        reason = ""  # the exit code says it
    elif record.failed == 37:
        limit = memory_bytes(asked.get("h_vmem", "0")) * record.slots
        if limit and record.max_vmem >= limit:
            state = JobState.OUT_OF_MEMORY
            reason = f"used {record.max_vmem / 2**20:.0f} MB, over its h_vmem of {limit / 2**20:.0f} MB"
        elif "h_rt" in asked:
            reason = f"killed at its time limit, h_rt={asked['h_rt']}"
    elif record.failed == 100 and record.exit_status > 128:
        state = JobState.CANCELLED if cancelled else JobState.FAILED
        code, killed_by, reason = None, record.exit_status - 128, ""
    return ElementStatus(record.element_id, state, record.node, reason, exit_code=code, signal=killed_by)


def parse_config(stdout: str) -> dict[str, str]:
    """``qconf -sconf`` -> {key: value}, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", stdout)
    config: dict[str, str] = {}
    for line in joined.splitlines():
        key, _, value = line.strip().partition(" ")
        if key and not key.startswith("#"):
            config[key] = value.strip()
    return config


def config_int(config: dict[str, str], key: str) -> int | None:
    """A positive whole number from the configuration; None when unset, 0 or not a number."""
    value = config.get(key, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def parse_cluster_queues(stdout: str) -> dict[str, int]:
    """``qstat -g c`` -> {cluster queue: usable slots (USED + RES + AVAIL)}."""
    slots: dict[str, int] = {}
    for line in stdout.splitlines():
        words = line.split()
        if len(words) >= 6 and all(w.isdigit() for w in words[2:5]):
            slots[words[0]] = int(words[2]) + int(words[3]) + int(words[4])
    return slots


_DONE_OR_GONE = re.compile(
    r"has (deleted|registered)|already in deletion|modified (hold|task concurrency)"
    r'|job "?\d+(\.\S+)?"? does not exist|job id \d+ not found'
)


def done_or_gone(returncode: int, output: str) -> bool:
    """qdel, qhold, qalter and qacct exit non-zero when one of the ids is unknown (gone,
    which for these is as good as done) and print their errors on stdout or stderr: True
    when every line says done or gone."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return returncode == 0 or (bool(lines) and all(_DONE_OR_GONE.search(line) for line in lines))


def transient(text: str) -> bool:
    """True when a command's output says qmaster is busy, restarting or unreachable."""
    return any(message in text.lower() for message in TRANSIENT_MESSAGES)
