"""The part of a job script that every backend shares: the job's environment (see
:mod:`corral.environment`) around the worker's command line. Pure.

Without ``post`` lines the worker replaces the shell (``exec``), so that every signal the
scheduler sends the script reaches the worker itself. With them the shell stays: it runs the
worker in the background, hands it the time-limit warning (SIGUSR1, which SLURM sends to the
batch shell alone), waits for it, runs the ``post`` lines and exits with the worker's status,
or, when a signal ended the worker, is ended by the same signal (SLURM requeues a preempted
job a signal ended, and fails one that exited 143). It ignores SIGTERM meanwhile: the
schedulers send that to the whole job (the local backend to its process group), the worker
included.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..directives import shell_line, shell_word
from ..environment import Environment
from .base import ArraySpec


def step_words(environment: Environment, cpus: int | None) -> list[str]:
    """The ``srun`` words that make the worker a job step of one task (none without
    ``srun``). SLURM 22.05's srun does not take ``--cpus-per-task`` from the job: it is given."""
    if environment.srun is None or environment.per_task:
        return []
    words = ["srun", "--ntasks=1", "--nodes=1"] + ([f"--cpus-per-task={cpus}"] if cpus else [])
    return words + [f"--{k}" if v is None else f"--{k}={v}" for k, v in environment.srun]


def worker_lines(spec: ArraySpec, index: str, element: str, step: Sequence[str] = ()) -> list[str]:
    """The script's lines from the job's environment to the worker's end. ``index`` and
    ``element`` are shell words that expand to the element's index and id on the node
    (``"$SLURM_ARRAY_TASK_ID"``); ``step`` words go before everything else of the command
    (SLURM's srun, see :func:`step_words`)."""
    environment = spec.environment
    lines = list(environment.setup)  # as written, as in a script of one's own
    lines += [f"export {name}={shell_word(value)}" for name, value in environment.env]
    python, *worker = spec.worker_argv()
    # A leading ~/ of the interpreter is the node's home: left to bash, the rest quoted
    interpreter = "~/" + shell_word(python[2:]) if python.startswith("~/") else shell_word(python)
    words = [shell_line([*step, *environment.launcher]), interpreter, shell_line(worker), index, element]
    command = " ".join(word for word in words if word)
    redirect, newline, document = spec.worker_stdin().partition("\n")
    body = newline + document
    if not environment.post:
        return [*lines, f"exec {command}{redirect}{body}"]
    forward = ["trap 'kill -USR1 $corral_worker 2>/dev/null' USR1  # the time-limit warning"]
    return [
        *lines,
        f"{command}{redirect} &{body}",
        "corral_worker=$!",
        *(forward if spec.resources.warning_seconds() is not None else []),
        "trap '' TERM  # the worker gets it too: wait for it to end",
        "while :; do wait $corral_worker; corral_status=$?",
        "    kill -0 $corral_worker 2>/dev/null || break; done",
        "wait $corral_worker 2>/dev/null; corral_late=$?  # a status the trap interrupted",
        "[[ $corral_late != 127 ]] && corral_status=$corral_late",
        "# the post lines",
        *environment.post,
        "# a worker a signal ended: so ends the job, as without post lines (SLURM requeues a",
        "# preempted job that a signal ended, and fails one that exited 143)",
        "if (( corral_status > 128 && corral_status < 160 )); then",
        "    trap - TERM; kill -s $((corral_status - 128)) $$; fi",
        "exit $corral_status",
    ]
