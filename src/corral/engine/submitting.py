"""From calls to submissions: pickling before anything is written, the array specs of a
batch, and the small arrays that carry resubmitted calls. Pure, apart from pickling.

Some objects pickle well but mean nothing in a job on another machine: a
``multiprocessing.Manager()`` proxy talks to a server process on this machine (the job
fails with ``AuthenticationError: digest sent was rejected``); queues, locks and pipes of
``multiprocessing`` and ``threading``, open files and sockets belong to this process or this
machine. Arguments holding one are refused at submission with a SerializationError that
names the argument and says what to do instead (see :func:`unshareable`)."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import sys
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any

import cloudpickle

from ..backends.base import ArraySpec, Limits
from ..environment import NO_ENVIRONMENT, Environment
from ..errors import NestedSubmissionError, SerializationError
from ..resources import Resources
from ..retry import RetryPolicy
from ..store.batch import BatchStore
from ..store.pickling import PLAIN, Blobs, KeepsBlobs, Pickler, is_big
from ..store.protocol import Mode, WorkerOptions
from ..worker.run import inside_job, pack_function
from .planning import Plan, plan_tasks

Call = tuple[tuple[Any, ...], dict[str, Any]]


def guard_nested(allow_nested: bool) -> None:
    element = inside_job()
    if element and not allow_nested:
        raise NestedSubmissionError(
            f"this code runs inside corral job {element} and tried to submit more jobs; "
            "pass allow_nested=True if that is what you want"
        )


_local: tuple[int, list[ModuleType]] = (0, [])  # (len(sys.modules), the modules found then)


def local_modules() -> list[ModuleType]:
    """The modules that live with the user's script: under its folder or the working
    directory, outside any installed environment (top-level names; corral's aside). Looked
    for again only when modules were imported since."""
    global _local
    if len(sys.modules) == _local[0]:
        return _local[1]
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    roots = {os.path.realpath(os.getcwd())} | ({os.path.dirname(os.path.realpath(main))} if main else set())
    installed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    found = []
    for name in sorted({n.partition(".")[0] for n in list(sys.modules)} - {"__main__", "corral"}):
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None)
        if module is None or not isinstance(file, str):
            continue
        path = os.path.realpath(file)
        if (
            any(path.startswith(r + os.sep) for r in roots)
            and not any(path.startswith(p + os.sep) for p in installed)
            and not any(part in path for part in ("site-packages", "dist-packages"))
        ):
            found.append(module)
    _local = (len(sys.modules), found)
    return found


@contextlib.contextmanager
def local_modules_by_value(ship: bool) -> Iterator[None]:
    """While it lasts (when ``ship``: the calls go to a remote host, whose nodes do not have
    the modules beside the user's script), cloudpickle sends :func:`local_modules` by value.
    Only then: by value, a class's attributes travel as they were, and a module registered
    for good would change what this process's other pickles mean."""
    if not ship:
        yield
        return
    ours = [m for m in local_modules() if m.__name__ not in cloudpickle.list_registry_pickle_by_value()]
    for module in ours:
        cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        for module in ours:
            cloudpickle.unregister_pickle_by_value(module)


def pickle_calls(
    fn: Callable[..., Any], calls: Sequence[Call], blobs: Blobs | None = None
) -> tuple[bytes, list[bytes]]:
    """The function and each call, pickled; with ``blobs``, the calls' big values go there,
    each once (see :class:`corral.store.pickling.Blobs`)."""
    try:
        function = pack_function(fn, _dumps)
    except Exception as exc:
        raise SerializationError(f"cannot pickle the function {fn!r}: {exc}") from exc
    return function, [pickle_call(call, index, blobs)[0] for index, call in enumerate(calls)]


def pickle_call(call: Call, index: int, blobs: Blobs | None = None) -> tuple[bytes, list[str]]:
    """One call's ``(args, kwargs)``, pickled, and the keys of the big values it sent to
    ``blobs``; SerializationError names the argument that cannot go to a job, and the call by
    ``index``."""
    args, kwargs = call
    plain = not kwargs and all(type(a) in PLAIN for a in args)
    if plain and not (blobs is not None and any(map(is_big, args))):
        return pickle.dumps(call, 5), []
    try:
        if blobs is not None:
            with io.BytesIO() as file:
                pickler = _CheckingBlobPickler(file, protocol=cloudpickle.DEFAULT_PROTOCOL)
                pickler.blobs = blobs
                pickler.dump(call)
                return file.getvalue(), pickler.used
        return _dumps(call), []
    except _Refused as refused:
        raise SerializationError(_refusal(_which(call), f"call {index}", refused)) from None
    except Exception as exc:
        raise SerializationError(f"cannot pickle the arguments of call {index}: {exc}") from exc


def refuse_unshareable(value: object, name: str) -> None:
    """SerializationError when ``value`` holds something a job on another machine cannot use
    (see :func:`unshareable`); ``name`` says what it is (``"initargs[0]"``)."""
    try:
        _dumps(value)
    except _Refused as refused:
        raise SerializationError(_refusal(name, "", refused)) from None
    except Exception:  # noqa: BLE001 - not picklable at all: pickling the whole says so later
        return


# What to say, by kind: what the object is, why a job elsewhere cannot use it, what to do.
_MANAGER = (
    "a multiprocessing {what}: it talks to a server process on this machine, which a job "
    "on another machine cannot reach (it would fail there with 'AuthenticationError: digest sent "
    "was rejected')",
    "return values from the calls instead (each future's result comes back to this process), "
    "or write them to files in a directory the nodes share",
)
_MACHINE = (
    "a {what}: it lives in this machine's shared memory or pipes, so it cannot reach a job on a cluster node",
    "return values from the calls instead, or use files in a directory the nodes share",
)
_PROCESS = (
    "a {what}: it belongs to this process (its threads, files or connections) and means nothing in a job",
    "pass what it refers to instead (a file's path, an address), and synchronize through "
    "return values or files",
)
_MP_MODULES = {
    "multiprocessing.queues", "multiprocessing.synchronize", "multiprocessing.sharedctypes",
    "multiprocessing.connection", "multiprocessing.pool", "multiprocessing.shared_memory",
    "multiprocessing.heap",
}  # fmt: skip
_PROCESS_TYPES = {
    "_thread.lock": "threading.Lock", "_thread.RLock": "threading.RLock",
    "threading._RLock": "threading.RLock", "threading.Condition": "threading.Condition",
    "threading.Semaphore": "threading.Semaphore", "threading.BoundedSemaphore": "threading.BoundedSemaphore",
    "threading.Event": "threading.Event", "threading.Barrier": "threading.Barrier",
    "queue.Queue": "queue.Queue", "_queue.SimpleQueue": "queue.SimpleQueue", "_socket.socket": "socket",
    "_io.FileIO": "open file", "_io.BufferedReader": "open file", "_io.BufferedWriter": "open file",
    "_io.BufferedRandom": "open file", "_io.TextIOWrapper": "open file",
}  # fmt: skip
_FUTURE = (
    "a future ({what}): its value is not known when the call is sent, and a job cannot wait for it",
    "pass future.result() instead, or run the call after that job with @corral.task's .after(ref)",
)
_verdicts: dict[type, str | None] = {}  # by type, decided once


def unshareable(value: object) -> str | None:
    """Why a job on another machine cannot use ``value`` (with what to do instead), or None
    when nothing is known against it. Looks at the type only, decided once per type."""
    kind = type(value)
    if kind in _verdicts:
        return _verdicts[kind]
    verdict = None
    for cls in kind.__mro__:
        name = f"{cls.__module__}.{cls.__qualname__}"
        what = cls.__qualname__
        if cls.__module__ == "multiprocessing.managers" and what in ("BaseProxy", "BaseManager"):
            text, fix = _MANAGER
            what = "Manager proxy" if what == "BaseProxy" else "Manager"
        elif cls.__module__ in _MP_MODULES:
            (text, fix), what = _MACHINE, f"multiprocessing {what}"
        elif name in _PROCESS_TYPES:
            (text, fix), what = _PROCESS, _PROCESS_TYPES[name]
        elif name in ("concurrent.futures._base.Future", "asyncio.futures.Future", "_asyncio.Future"):
            (text, fix), what = _FUTURE, kind.__qualname__
        else:
            continue
        verdict = f"{text.format(what=what)}; {fix}"
        break
    _verdicts[kind] = verdict
    return verdict


class _Refused(Exception):
    def __init__(self, value: object, reason: str) -> None:
        super().__init__(reason)
        self.value, self.reason = value, reason


class _CheckingPickler(Pickler):
    """corral's cloudpickle (see :mod:`corral.store.pickling`), refusing what :func:`unshareable`
    names wherever it sits in the data: in the arguments, or captured by the function."""

    def reducer_override(self, obj: Any) -> Any:
        reason = unshareable(obj)
        if reason is not None:
            raise _Refused(obj, reason)
        return super().reducer_override(obj)


class _CheckingBlobPickler(KeepsBlobs, _CheckingPickler):
    """The checking pickler, storing big values once (see :class:`Blobs`)."""


def _dumps(value: object) -> bytes:
    with io.BytesIO() as file:
        _CheckingPickler(file, protocol=cloudpickle.DEFAULT_PROTOCOL).dump(value)
        return file.getvalue()


def _which(call: Call) -> str:
    """The argument of ``call`` that holds the refused object."""
    args, kwargs = call
    named = [(f"argument {i}", a) for i, a in enumerate(args)] + [
        (f"argument {k!r}", v) for k, v in kwargs.items()
    ]
    for name, value in named:
        try:
            _dumps(value)
        except _Refused:
            return name
        except Exception:  # noqa: BLE001, S112 - another failure: not the argument we look for
            continue
    return "an argument"


def _refusal(name: str, where: str, refused: _Refused) -> str:
    shown = repr(refused.value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    of = f" of {where}" if where else ""
    return f"cannot send {name}{of} to a job: it holds {shown}, {refused.reason}"


def probes(plans: list[Plan]) -> bool:
    """A lone pull array starts throttled to one element (one element starts about as fast as
    a plain job, eight take twice as long), and is widened once its calls turn out long enough
    to need more (Cluster._widen)."""
    return len(plans) == 1 and plans[0].mode is Mode.PULL and plans[0].elements > 1


def array_specs(
    plans: list[Plan],
    batch_dir: str,
    name: str,
    resources: Resources,
    max_running: int | None,
    command: str | None = None,
    chdir: str | None = None,
    *,
    python: str | None = None,
    environment: Environment = NO_ENVIRONMENT,
) -> list[ArraySpec]:
    """The submissions of a batch (see probes for the first one's throttle); its jobs run in
    ``chdir`` (default: this process's working directory now) with the interpreter
    ``environment.python``, else ``python``, else this process's."""
    probe = probes(plans)
    return [
        ArraySpec(
            batch_dir=batch_dir,
            sub=plan.sub,
            elements=plan.elements,
            resources=resources,
            job_name=f"corral-{name}"[:64],
            python=environment.python or python or sys.executable,
            chdir=chdir or os.getcwd(),
            max_running=1 if probe else max_running if plan.mode is Mode.STATIC else None,
            command=command,
            environment=environment,
        )  # fmt: skip
        for plan in plans
    ]


def log_pattern(store: BatchStore) -> tuple[str, str]:
    return store.element_log_pattern("out", "{job}", "{index}"), store.element_log_pattern(
        "err", "{job}", "{index}"
    )


def retry_plans(
    first_sub: int,
    retries: list[tuple[int, int, Resources]],
    limits_of: Callable[[Resources], Limits],
    max_running: int | None,
) -> list[tuple[Plan, Resources]]:
    """New submissions for calls to run again: one per distinct resources (a call that timed
    out may ask for more time), numbered from ``first_sub``. ``retries`` holds
    (call, attempt, resources)."""
    groups: dict[Resources, list[tuple[int, int]]] = {}
    for call, attempt, resources in retries:
        groups.setdefault(resources, []).append((call, attempt))
    plans = []
    for offset, (resources, tasks) in enumerate(groups.items()):
        plan = plan_tasks(first_sub + offset, tasks, limits_of(resources), max_running=max_running)
        plans.append((plan, resources))
    return plans


def pack_engine(
    name: str, max_running: int | None, retry: RetryPolicy, worker_options: WorkerOptions
) -> bytes:
    """The batch settings :func:`attach` needs (cloudpickle: ``retry_on`` may name classes
    defined in ``__main__``)."""
    settings = {"name": name, "max_running": max_running, "retry": retry, "worker_options": worker_options}
    return bytes(cloudpickle.dumps(settings))


def pack_submission(plan: Plan, spec: ArraySpec) -> bytes:
    return pickle.dumps({"plan": plan, "spec": spec}, protocol=pickle.HIGHEST_PROTOCOL)
