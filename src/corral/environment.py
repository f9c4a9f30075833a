"""The job's environment: what runs on the node around corral's worker, for every backend.

One typed, validated value, as :mod:`corral.resources` is for what a job asks the scheduler
for. ``Environment.from_options(**options)`` is its door from user keywords and config files;
a bad value is an :class:`~corral.errors.ResourceError` before anything is written.

==========  ======================================================================================
option      what it does in the job script
==========  ======================================================================================
setup       shell lines run before the worker: ``module load``, ``conda activate``, ``source
            venv/bin/activate``. They run under bash exactly as written, in order; the worker
            starts only if all of them succeed (the script stops at the first that fails).
            From code (Executor, Pool, ``@task``; never a config file) it may also hold Python
            callables, alone or among the lines: see :mod:`corral.worker.setup`. The
            front-ends take them out (:func:`split_setup`) before this value is built.
env         variables exported to the worker, ``{"OMP_NUM_THREADS": "4"}``. Values are taken
            literally (no ``$VAR`` expansion: write expansions as a ``setup`` line).
python      the interpreter that runs the worker on the nodes: a path, or a name looked up on
            the node's PATH after ``setup`` ran. Default: this process's own interpreter, or
            on a remote host its ``python``. It must have corral and cloudpickle.
post        shell lines run after the worker ended, whatever its exit status, which the job
            keeps. The time-limit warning still reaches the worker.
srun        run the worker as a SLURM job step: ``srun`` with these options, ``{"cpu-bind":
            "cores"}`` (True: srun without options). SLURM only.
launcher    words put before the interpreter, e.g. ``["nsys", "profile", "-o", "prof"]`` or
            ``"numactl --interleave=all"`` (split as a shell would, never run through one).
per_task    run each call once on every task of the job (``tasks=``, ``nodes=``): under
            ``srun`` on SLURM, as that many processes on the local backend. Each process sees
            its rank in :func:`corral.task_info`. The call's value is rank 0's (``True``), or
            the list of every rank's, in rank order (``"all"``); a rank that raised makes the
            call raise its exception.
forward_    (default True) the client's logging reaches the calls: on the node, the root logger
logging     gets the client's root level and the format of its first root handler, writing to
            each call's stderr (see :mod:`corral.worker.setup`). False: the node's logging is
            left as Python starts it. Nothing is ever configured in the client.
==========  ======================================================================================

What the job inherits besides: the environment of the process that submits it, as the
scheduler passes it on (SLURM and the local backend do; SGE jobs get nothing but ``env``).
On a remote host that process is the login node's agent, never the laptop's: the login
node's login environment plus ``env``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace

from .directives import unprintable, word_problem
from .errors import ResourceError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_SRUN_OPTION = re.compile(r"[a-z][a-z0-9-]*")
#: srun options corral sets itself on a job step.
SRUN_RESERVED = frozenset({"ntasks", "nodes", "output", "error", "input", "jobid", "job-name"})
#: Lines a scheduler would read as its own options in a job script.
_DIRECTIVE = re.compile(r"\s*#\s*(SBATCH|\$|PBS|BSUB)")
PER_TASK_VALUES = (False, True, "all")


def shell_lines(value: object, name: str) -> tuple[str, ...]:
    """``value`` (a text, its lines, or a list of lines) as lines of shell, each checked: no
    control character but a tab, and no line a scheduler reads as a directive."""
    if isinstance(value, str):
        items: list[object] = list(value.splitlines())
    elif isinstance(value, Sequence):
        items = list(value)
    else:
        raise ResourceError(f"{name}={value!r} must be shell lines: a text or a list of texts")
    lines: list[str] = []
    for item in items:
        if callable(item) and name == "setup":
            raise ResourceError(
                f"setup: {item!r} is a Python callable, which is taken only from code: give it as "
                "setup= to an Executor, a Pool or @task, not in a config file or set_defaults()"
            )
        if not isinstance(item, str):
            raise ResourceError(f"{name}: {item!r} is not a line of text")
        for line in item.splitlines() or [""]:
            bad = unprintable(line.replace("\t", " "))
            if bad is not None:
                raise ResourceError(f"{name}: the line {line!r} holds the control character {bad}")
            if _DIRECTIVE.match(line):
                raise ResourceError(
                    f"{name}: the line {line!r} would be read as a scheduler directive; "
                    "give resources as corral options (extra={...} for the rest)"
                )
            if line.strip():
                lines.append(line)
    return tuple(lines)


def split_setup(value: object) -> tuple[object, tuple[Callable[[], object], ...]]:
    """``setup=`` as given in code: (its shell lines, or None when it holds none, so that the
    lines of the configuration still apply; its Python callables, in order). A callable is
    one item, or the whole value; anything else but text is a ResourceError here, before
    anything is submitted. The lines are checked later, as every layer's are."""
    if value is None:
        return None, ()
    if callable(value) and not isinstance(value, str):
        return None, (value,)
    if isinstance(value, str) or not isinstance(value, Sequence):
        return value, ()  # text, or a value shell_lines refuses with its own words
    lines: list[object] = []
    calls: list[Callable[[], object]] = []
    for item in value:
        if isinstance(item, str):
            lines.append(item)
        elif callable(item):
            calls.append(item)
        else:
            raise ResourceError(
                f"setup: {item!r} is neither a line of shell nor a Python callable (a function "
                "of no arguments, run on the node before the calls)"
            )
    # Callables alone leave the configuration's lines (a venv's activation) in place; an
    # empty list still clears them, as it always did.
    return (lines if lines or not calls else None), tuple(calls)


def env_vars(value: object) -> tuple[tuple[str, str], ...]:
    """``value`` (a mapping of variable names to texts or numbers) as (name, text) pairs."""
    if not isinstance(value, Mapping):
        raise ResourceError(f"env={value!r} must be a mapping of variable names to values")
    pairs: list[tuple[str, str]] = []
    for key, raw in value.items():
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
            raise ResourceError(f"env: {key!r} is not an environment variable name")
        if key.startswith("CORRAL_"):
            raise ResourceError(f"env: {key} is corral's own variable, set by corral on the node")
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            raise ResourceError(f"env: {key}={raw!r} must be a text or a number")
        text = str(raw)
        if "\0" in text:
            raise ResourceError(f"env: {key} holds a NUL character, which no variable can hold")
        pairs.append((key, text))
    return tuple(pairs)


def srun_options(value: object) -> tuple[tuple[str, str | None], ...] | None:
    """``srun=``: None (no step), True (a step without options), or a mapping of long option
    names to values (None or True: a bare flag; False: left out)."""
    if value is None or value is False:
        return None
    if value is True:
        return ()
    if not isinstance(value, Mapping):
        raise ResourceError(
            f"srun={value!r} must be True or a mapping of srun options, e.g. {{'cpu-bind': 'cores'}}"
        )
    options: list[tuple[str, str | None]] = []
    for key, raw in value.items():
        if not isinstance(key, str) or not _SRUN_OPTION.fullmatch(key):
            raise ResourceError(f"srun option {key!r} is malformed: give the long name without dashes")
        reserved = next((r for r in sorted(SRUN_RESERVED) if r.startswith(key)), None)
        if reserved is not None:
            raise ResourceError(
                f"srun option {key!r} sets {reserved!r}, which corral sets on the step itself"
            )
        if raw is False:
            continue
        if raw is None or raw is True:
            options.append((key, None))
            continue
        text = str(raw) if isinstance(raw, (int, float)) else raw
        if not isinstance(text, str) or (problem := word_problem(text)) is not None:
            raise ResourceError(f"srun option {key}={raw!r} cannot be passed: {problem or 'it is not text'}")
        options.append((key, text))
    return tuple(options)


def words(value: object, name: str) -> tuple[str, ...]:
    """``value`` (a text, split as a shell would split it, or a list of words) as argv words."""
    if isinstance(value, str):
        try:
            items: list[object] = list(shlex.split(value))
        except ValueError as exc:
            raise ResourceError(f"{name}={value!r} cannot be split into words: {exc}") from None
    elif isinstance(value, Sequence):
        items = list(value)
    else:
        raise ResourceError(f"{name}={value!r} must be a command: a text or a list of words")
    for item in items:
        if not isinstance(item, str) or not item or "\0" in item:
            raise ResourceError(f"{name}: {item!r} is not a word of a command")
    return tuple(str(item) for item in items)


@dataclass(frozen=True, kw_only=True)
class Environment:
    """How a job is set up around the worker (see the module doc). All fields are optional;
    the default environment adds nothing to the job script."""

    setup: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    python: str | None = None
    post: tuple[str, ...] = ()
    srun: tuple[tuple[str, str | None], ...] | None = None
    launcher: tuple[str, ...] = ()
    per_task: bool | str = False
    forward_logging: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.forward_logging, bool):
            raise ResourceError(
                f"forward_logging={self.forward_logging!r} must be True (the client's logging level "
                "and format reach the calls) or False"
            )
        if self.python is not None and (not isinstance(self.python, str) or not self.python.strip()):
            raise ResourceError(f"python={self.python!r} must be an interpreter's path or name")
        if self.python is not None and (bad := unprintable(self.python)) is not None:
            raise ResourceError(f"python={self.python!r} holds the control character {bad}")
        if self.per_task not in PER_TASK_VALUES or (
            isinstance(self.per_task, int) and not isinstance(self.per_task, bool)
        ):
            raise ResourceError(f"per_task={self.per_task!r} must be False, True (rank 0's value) or 'all'")

    @property
    def is_default(self) -> bool:
        """True when it adds nothing to a job (the interpreter aside)."""
        return replace(self, python=None, forward_logging=True) == Environment()

    @property
    def env_map(self) -> dict[str, str]:
        """``env`` as a dict."""
        return dict(self.env)

    @classmethod
    def from_options(cls, **options: object) -> Environment:
        """Build from user keywords (the forms the module doc lists); unknown keys fail, and
        None counts as not given."""
        known = [f.name for f in fields(cls)]
        unknown = [k for k in options if k not in known]
        if unknown:
            raise ResourceError(f"unknown environment option {unknown[0]!r} (known: {', '.join(known)})")
        values: dict[str, object] = {}
        for key, value in options.items():
            if value is None:
                continue
            if key in ("setup", "post"):
                values[key] = shell_lines(value, key)
            elif key == "env":
                values[key] = env_vars(value)
            elif key == "srun":
                values[key] = srun_options(value)
            elif key == "launcher":
                values[key] = words(value, key)
            else:
                values[key] = value
        return cls(**values)  # type: ignore[arg-type]

    def merged(self, other: Environment) -> Environment:
        """``other`` laid over this one: its fields that are set replace these, but ``env``
        merges variable by variable."""
        changes: dict[str, object] = {}
        for f in fields(other):
            value = getattr(other, f.name)
            if value != getattr(Environment(), f.name):
                changes[f.name] = value
        if "env" in changes:
            changes["env"] = tuple({**dict(self.env), **dict(other.env)}.items())
        return replace(self, **changes)  # type: ignore[arg-type]


#: The environment that adds nothing (a default argument's value).
NO_ENVIRONMENT = Environment()
#: Keys of :class:`Environment`, as options of the front-ends and keys of the config files.
KEYS = tuple(f.name for f in fields(Environment))
