"""What to tell a user who gave an option corral does not know.

Newcomers bring the names of the tools they know: ``max_workers`` from concurrent.futures,
``processes`` from multiprocessing, ``timeout_min`` and ``mem_gb`` from submitit, sbatch's own
``cpus_per_task``. Fuzzy matching alone maps those to the wrong key (``max_workers`` looks
like ``max_retries``), so a table of known foreign names comes first; the nearest known name
is the fallback. Pure, and used by every place that refuses an unknown key (resources,
config files, ``set_defaults``, the front-ends' keywords).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

_CONCURRENCY = "max_running=N on corral.Executor, processes=N on corral.Pool"

#: Foreign (or misplaced) names, with what they are in corral. Keys use ``_`` for ``-``.
FOREIGN: dict[str, str] = {
    "max_workers": f"concurrent.futures' max_workers is {_CONCURRENCY}",
    "processes": "multiprocessing's processes=N is corral.Pool(processes=N), "
    "max_running=N on corral.Executor",
    "max_running": f"max_running is not a resource: it is {_CONCURRENCY}",
    "num_simultaneously_running_tasks": f"pypoolparty's num_simultaneously_running_tasks is {_CONCURRENCY}",
    "slurm_array_parallelism": f"submitit's slurm_array_parallelism is {_CONCURRENCY}",
    "timeout_min": "submitit's timeout_min is corral's time= (whole minutes: time=60, or time='1:00:00')",
    "mem_gb": "submitit's mem_gb is corral's memory= (memory='16G', or whole MB)",
    "cpus_per_task": "sbatch's and submitit's cpus_per_task is corral's cpus=",
    "gpus_per_node": "submitit's gpus_per_node is corral's gpus= (per element: gpus=2 or gpus='a100:2')",
    "gpus_per_task": "submitit's gpus_per_task is corral's gpus= (per array element)",
    "tasks_per_node": "submitit's tasks_per_node is corral's tasks= (the tasks of the whole job) with nodes=",
    "ntasks": "sbatch's ntasks is corral's tasks=",
    "slurm_additional_parameters": "submitit's slurm_additional_parameters is corral's extra={...} "
    "(sbatch's long option names without dashes, e.g. extra={'mail-type': 'END'})",
    "additional_parameters": "submitit's additional_parameters is corral's extra={...}",
    "name": "submitit's name is corral's job_name=",
    "mem": "sbatch's mem is corral's memory= (memory='4G')",
    "mem_per_cpu": "corral's memory= is per array element; "
    "for sbatch's mem-per-cpu use extra={'mem-per-cpu': '2G'}",
    "walltime": "a walltime is corral's time= (time='1:00:00')",
    "time_limit": "a time limit is corral's time= (time='1:00:00')",
    "queue": "a queue is corral's partition= (on SGE, the queue)",
    "cores": "cores is corral's cpus=",
    "cpu": "cluster_tools' cpu is corral's cpus=",
    "work_dir": "pypoolparty's work_dir is corral's directory=",
    "keep_work_dir": "pypoolparty's keep_work_dir=True is corral's keep='all' "
    "(keep='failed' is the Pool's default)",
    "keep_logs": "cluster_tools' keep_logs is corral's keep= ('all', 'failed' or 'none')",
    "additional_setup_lines": "cluster_tools' additional_setup_lines are corral's setup=[...] (shell lines)",
    "job_script_prologue": "dask-jobqueue's job_script_prologue is corral's setup=[...] (shell lines)",
    "job_extra_directives": "dask-jobqueue's job_extra_directives are corral's extra={...} "
    "(sbatch's long option names without dashes)",
    "slurm_max_num_timeout": "submitit's slurm_max_num_timeout is corral's max_requeues=",
    "logging_setup_fn": "cluster_tools' logging_setup_fn is a callable in corral's setup=[...]; "
    "the client's logging level and format reach the calls by themselves (forward_logging)",
    "job_resources": "give each resource as its own keyword: time=, memory=, cpus=, partition=, ...",
    "max_num_resubmissions": "pypoolparty's max_num_resubmissions is corral's max_retries=",
    "python_path": "the interpreter of the jobs is corral's python= (a path, or a name on the nodes' PATH)",
    "exclusive": "sbatch's exclusive is extra={'exclusive': True}",
    "mail_type": "sbatch's mail-type goes in extra={'mail-type': 'END'}",
    "mail_user": "sbatch's mail-user goes in extra={'mail-user': 'me@example.org'}",
}

#: Said after the keys a front-end takes besides its own arguments.
FRONT_END_NOTE = "an Executor also takes max_running=N, a Pool processes=N"


def unknown(
    key: str, known: Iterable[str], *, where: str = "", label: str = "known keys", note: str = ""
) -> str:
    """:func:`hint`, then the ``known`` names under ``label`` and a ``note`` (left out when
    the hint already says as much), e.g. ``'memroy'; did you mean 'memory'? (known keys: ...)``."""
    known = sorted(known)
    text = hint(key, known, where)
    tail = f"; {note}" if note and "max_running" not in text else ""
    return f"{text} ({label}: {', '.join(known)}{tail})"


def hint(key: str, known: Iterable[str], where: str = "") -> str:
    """``key`` (quoted) and ``where`` it was found, followed by what the user may have meant:
    the corral name of a known foreign name, else the nearest name of ``known`` (or of a
    foreign name, with what it is in corral), else nothing."""
    known = list(known)
    name = key.strip().lstrip("-").lower().replace("-", "_") if isinstance(key, str) else ""
    if name in known and name != key:  # job-name, Memory, --partition
        return f"{key!r}{where}; did you mean {name!r}?"
    if name.startswith("slurm_") and name[6:] in known:  # submitit's slurm_partition, ...
        return f"{key!r}{where}; did you mean {name[6:]!r}? (submitit's {name} is corral's {name[6:]}=)"
    if name in FOREIGN and name not in known:
        return f"{key!r}{where}{_meant(FOREIGN[name], known)}"
    close = difflib.get_close_matches(name, [*known, *(f for f in FOREIGN if f not in known)], n=1)
    if not close:
        return f"{key!r}{where}"
    if close[0] in known:
        return f"{key!r}{where}; did you mean {close[0]!r}?"
    return f"{key!r}{where}; did you mean {close[0]!r}? {FOREIGN[close[0]]}"


def _meant(text: str, known: list[str]) -> str:
    """``text`` as a suggestion: "did you mean 'cpus'? (...)" when it names one known key."""
    targets = [k for k in known if f"corral's {k}=" in text]
    return f"; did you mean {targets[0]!r}? ({text})" if len(targets) == 1 else f": {text}"
