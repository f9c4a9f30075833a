"""The ``@task`` front-end: distribute calls of decorated functions, fire and forget.

::

    @corral.task(time="10:00")
    def solve(instance): ...

    solve("a.txt")                          # a plain call, here and now
    ref = solve.distribute("a.txt")         # a job; returns at once with a JobRef
    check.after(ref).distribute()           # runs once that job completed successfully
    check.after("4242").distribute()        # ... once job 4242, submitted elsewhere, did
    corral.join()                           # later calls wait for every job before (afterany)

``options`` and ``after`` return new task functions and never change the one they are
called on. Dependencies are the scheduler's own (see :mod:`corral.engine.dependencies`), so the
client may exit as soon as everything is submitted; the local backend keeps the same order.
Calls distributed inside ``with corral.Batch():`` are bundled into few jobs (see
:mod:`corral.frontends.batching`). Resources come from the configuration (:mod:`corral.config`), the
decorator, ``options`` and nothing else, in that order of strength.

Jobs of tasks are not resubmitted by corral when their node fails: a new job would have a
new id, which jobs already waiting for the old one would never see.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from ..config_keys import convert
from ..environment import KEYS as ENVIRONMENT_KEYS
from ..environment import Environment
from ..job import Condition
from ..resources import Resources
from ..worker.setup import Prepared
from . import batching
from .bundle import import_function, lookup
from .commands import ShellCommandError, ShellResult
from .node_setup import NodeSetup
from .refs import JobRef

P = ParamSpec("P")
R = TypeVar("R")

#: What ``after`` takes: a JobRef, a job id (text or number), or an iterable of them.
AfterItem = JobRef[Any] | str | int | Iterable[Any]
_JOB_ID = re.compile(r"[1-9][0-9]*(?:_[0-9]+)?")

#: Options of a task that are not resources (see corral.config for the resource keys).
TASK_OPTIONS = ("profile", "allow_nested", "backend", "directory", "host", "clusters")


class TaskFunction(Generic[P, R]):
    """A function that runs as usual when called, and as a job with :meth:`distribute`."""

    def __init__(
        self,
        fn: Callable[P, R],
        options: dict[str, Any],
        after: tuple[JobRef[Any] | str, ...] = (),
        condition: Condition = Condition.OK,
        base: TaskFunction[Any, Any] | None = None,
    ) -> None:
        self._fn = fn
        self._options = options  # as given, ``setup``'s callables included (options() merges these)
        self._sent, self._node = NodeSetup.take(options)  # what the configuration sees; what the node runs
        self._after = after
        self._condition = condition
        self._base: TaskFunction[Any, Any] = base or self
        self.__name__: str = getattr(fn, "__name__", "task")
        self.__qualname__: str = getattr(fn, "__qualname__", self.__name__)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._fn(*args, **kwargs)

    def distribute(self, *args: P.args, **kwargs: P.kwargs) -> JobRef[R]:
        """Run ``fn(*args, **kwargs)`` as a job, or add it to the open ``Batch``; return at
        once. Bad options, arguments that cannot be pickled, and code running inside a
        job without ``allow_nested=True`` fail here, before anything is submitted."""
        ref: JobRef[R] = JobRef(self.__name__)
        function: Callable[..., Any] = self
        key = id(self._base)  # calls of one task share their function in a Batch's bundle
        steps = self._node.steps
        if steps:  # ... unless its setup differs: this task function's then
            function, key = Prepared(self, steps, None, self._node.key), id(self._node)
        entry = batching.Entry(
            ref, function, key, None, (args, kwargs), self._sent, self._after, self._condition
        )
        batching.distribute(entry)
        return ref

    def options(self, **options: Any) -> TaskFunction[P, R]:
        """A copy with these resources or options (``profile``, ``allow_nested``) laid over
        this one's; this one is unchanged."""
        check_options(options)
        merged = {**self._options, **options}
        return TaskFunction(self._fn, merged, self._after, self._condition, self._base)

    def after(self, *refs: AfterItem, condition: str = "ok") -> TaskFunction[P, R]:
        """A copy whose jobs run only after the jobs of ``refs`` ended as ``condition``
        says: ``"ok"`` (each completed successfully), ``"any"`` (each ended, however),
        ``"notok"`` (each failed) or ``"started"`` (each started, or was cancelled). If that
        can never happen, the job never runs and its ref raises DependencyError. ``refs`` are
        JobRefs, or the scheduler's ids of jobs corral did not submit (``"4242"``, ``4242``,
        ``"4242_3"``). This one is unchanged."""
        needs = flatten_refs(refs)
        return TaskFunction(self._fn, self._options, self._after + needs, to_condition(condition), self._base)

    def __reduce__(self) -> tuple[Any, ...]:
        """Travel to the nodes as the plain function: by reference when the decorated
        function can be imported there, else by value (see :mod:`corral.frontends.bundle`)."""
        base = self._base
        module = sys.modules.get(base.__module__)
        if base.__module__ != "__main__" and lookup(module, base.__qualname__) is base:
            return (import_function, (base.__module__, base.__qualname__))
        return (rebuild_task, (self._fn, self._options))

    def __repr__(self) -> str:
        extra = f" after {len(self._after)} job(s)" if self._after else ""
        return f"<task {self.__qualname__}{extra}>"


@overload
def task(fn: Callable[P, R], /) -> TaskFunction[P, R]: ...
@overload
def task(fn: None = None, /, **options: Any) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...
def task(fn: Callable[P, R] | None = None, /, **options: Any) -> Any:
    """Make a function distributable: ``@corral.task`` or ``@corral.task(time="1:00:00")``.

    ``options`` are resources (``time``, ``cpus``, ``memory``, ``partition``, ...), the job's
    environment (``setup``, ``env``, ``python``, ``post``, ``forward_logging``, ...: see
    :mod:`corral.environment`; ``setup`` may hold Python callables, run once per element
    before its first call of this task, see :mod:`corral.worker.setup`),
    ``profile`` (a configuration profile), ``host`` (a configured host, reached over SSH),
    ``clusters`` (the SLURM cluster of a multi-cluster site, ``-M``), ``singleton`` (one job
    of its ``job_name`` at a time),
    ``allow_nested`` (let code already running in a job distribute it), ``backend`` and
    ``directory``. Unknown keys fail here.
    """
    check_options(options)
    if fn is None:
        return lambda f: TaskFunction(f, dict(options))
    return TaskFunction(fn, dict(options))


def sbatch(
    command: str,
    *,
    after: AfterItem = (),
    condition: str = "ok",
    **options: Any,
) -> JobRef[ShellResult]:
    """Run a shell command as a job; return at once with its JobRef.

    The command goes into the job script exactly as given and runs under bash on the node
    (``"echo $HOSTNAME"`` prints the node's name). ``ref.result()`` is a ShellResult, or
    raises ShellCommandError when the command exits non-zero (and jobs waiting for it with
    ``condition="ok"`` do not run). ``after``, ``condition`` and the options are those of
    tasks. Without a cluster it runs locally, as everything else does.
    """
    if not isinstance(command, str) or not command.strip():
        raise ValueError(f"sbatch needs a shell command, got {command!r}")
    check_options(options)
    needs = flatten_refs((after,))
    ref: JobRef[ShellResult] = JobRef(command)
    entry = batching.Entry(ref, None, 0, command, ((), {}), options, needs, to_condition(condition))
    batching.distribute(entry)
    return ref


def srun(
    command: str,
    *,
    after: AfterItem = (),
    condition: str = "ok",
    **options: Any,
) -> ShellResult:
    """Run a shell command as a job and wait for it: its exit code and output, whatever the
    exit code. A job that fails for another reason (time limit, cancelled) raises its
    JobError. Inside an open ``Batch`` it does not wait for the batch: it runs now."""
    token = batching.suspend()
    try:
        ref = sbatch(command, after=after, condition=condition, **options)
    finally:
        batching.resume(token)
    try:
        return ref.result()
    except ShellCommandError as exc:
        return exc.result


def check_options(options: dict[str, Any]) -> None:
    """Reject unknown or malformed resource options at once (ResourceError)."""
    options, _ = NodeSetup.take(options)  # setup's callables stay in code; its lines are checked
    Resources.from_options(
        **{k: v for k, v in options.items() if k not in TASK_OPTIONS and k not in ENVIRONMENT_KEYS}
    )
    Environment.from_options(**{k: v for k, v in options.items() if k in ENVIRONMENT_KEYS})
    if options.get("clusters") is not None:
        convert("clusters", options["clusters"])


def flatten_refs(refs: Iterable[Any]) -> tuple[JobRef[Any] | str, ...]:
    """Refs given one by one, as lists (``*batch.flush()`` or ``batch.flush()``), or mixed;
    job ids of jobs corral did not submit (``"4242"``, ``4242``, ``"4242_3"``) as text, their
    form checked here (whether the backend can wait for them, at ``distribute``)."""
    flat: list[JobRef[Any] | str] = []
    for item in refs:
        if isinstance(item, JobRef):
            flat.append(item)
        elif isinstance(item, (str, int)) and not isinstance(item, bool):
            flat.append(job_id_of(item))
        elif isinstance(item, Iterable) and not isinstance(item, bytes):
            flat += flatten_refs(item)
        else:
            raise TypeError(
                f"after() takes JobRefs (what distribute and sbatch return) or job ids, got {item!r}"
            )
    return tuple(flat)


def job_id_of(item: str | int) -> str:
    """A job id given to ``after``, as text: a job (``4242``) or an array element
    (``"4242_3"``); a ValueError for anything else."""
    text = str(item).strip()
    if not _JOB_ID.fullmatch(text):
        raise ValueError(
            f"after({item!r}): a job id is the scheduler's number of a job ('4242', or 4242) or of "
            "an array element ('4242_3')"
        )
    return text


def to_condition(condition: str | Condition) -> Condition:
    try:
        return Condition(condition)
    except ValueError:
        raise ValueError(
            f"condition={condition!r}: use 'ok' (each job completed successfully), "
            "'any' (each job ended), 'notok' (each job failed) or 'started' (each job started)"
        ) from None


def rebuild_task(fn: Callable[..., Any], options: dict[str, Any]) -> Any:
    """A task function that travelled by value (defined in ``__main__``): still a task on
    the node, so that a task may distribute another one from the same script."""
    return TaskFunction(fn, options)
