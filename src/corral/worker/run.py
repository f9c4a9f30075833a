"""``python -m corral.worker BATCH_DIR SUB INDEX ELEMENT``: the only code that runs on nodes.

One array element of submission SUB of the batch in BATCH_DIR. It reads its submission's plan
and takes calls one by one, each by creating its claim file exclusively, so that no call runs
twice however many elements pull from the same batch:

* STATIC plans give element k the calls ``tasks[k*chunk:(k+1)*chunk]``;
* PULL plans let every element take any unclaimed call, each starting at its own offset,
  so that uneven or unknown durations balance themselves and late elements find little to do.

Each call's stdout and stderr go to their own files, and its outcome (the value, or the
exception with its formatted traceback) is written atomically. Inputs are never deleted: a
requeued element starts again and re-runs the calls it had claimed but not finished.

The plan (a :class:`corral.store.protocol.WorkerPlan`) also carries what the backend wants of
the worker, as data: how to have the element run again after a time-limit warning
(:class:`~corral.store.protocol.Requeue`) and which environment variable says it is a rerun.
This module names no scheduler.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import cloudpickle

from ..errors import FormatError
from ..store.batch import BatchStore, Outcome
from ..store.pickling import dumps
from ..store.protocol import Claim, Mode, Requeue, WorkerPlan
from ..transports.local import LocalTransport
from ..trust import check_batch_dir
from .checkpoint import Checkpointable, Interrupted, Resume, StopSignals

#: Set while a call runs in this process (the sequential backend); the env var covers jobs.
_current_element: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "corral_current_element", default=None
)
IN_JOB_ENV = "CORRAL_IN_JOB"
REQUEUE_TIMEOUT = 60.0  # seconds the requeue command may take


def inside_job() -> str | None:
    """The element id when this code runs inside a corral job, else None."""
    return _current_element.get() or os.environ.get(IN_JOB_ENV) or None


def pack_function(fn: Callable[..., Any], pickler: Callable[[Any], bytes] = dumps) -> bytes:
    """Store a function with the client's ``sys.path``, so that modules found next to the
    user's script are found on the node too. ``pickler`` is corral's cloudpickle
    (:func:`corral.store.pickling.dumps`) or one that also refuses what cannot cross to a node."""
    return pickle.dumps({"sys_path": list(sys.path), "fn": pickler(fn)})


def unpack_function(data: bytes) -> Callable[..., Any]:
    blob = pickle.loads(data)
    for entry in blob["sys_path"]:
        if entry not in sys.path:
            sys.path.append(entry)
    fn: Callable[..., Any] = cloudpickle.loads(blob["fn"])
    return fn


class ElementRun(NamedTuple):
    """What one array element did."""

    ran: int  # calls it ran
    failed: int  # of those, calls that failed
    exit_code: int  # 1 when one failed and its plan is strict, else 0


def element_order(plan: WorkerPlan, index: int) -> list[tuple[int, int]]:
    """The calls element ``index`` of a submission tries, in order."""
    tasks = list(plan.tasks)
    if plan.mode is Mode.STATIC:
        return tasks[index * plan.chunk : (index + 1) * plan.chunk]
    offset = (plan.first_element + index) * len(tasks) // plan.total_elements
    return tasks[offset:] + tasks[:offset]


def run_element(
    batch_dir: str,
    sub: int,
    index: int,
    element: str,
    *,
    redirect: bool = True,
    stdin: str | None = None,
    signals: StopSignals | None = None,
) -> ElementRun:
    """Run every call element ``index`` of submission ``sub`` can claim; say how many ran,
    how many of those failed, and the element's exit code. A plan marked ``stdin`` (a shell
    command written into the job script) gets the script's input as every call's first
    argument: ``stdin``, or else what the worker reads from its standard input. With
    ``signals`` (a job, not the sequential backend), the scheduler's warning and SIGTERM stop
    the element between calls, or interrupt a checkpointable call (see
    :mod:`corral.worker.checkpoint`); an element with work left after a warning asks to be requeued."""
    store = BatchStore(batch_dir, LocalTransport())
    store.check_format()  # a batch of another format: refused before anything of it is read
    plan = store.read_plan(sub)
    fn = unpack_function(store.read_function())
    if plan.stdin:
        fn = functools.partial(fn, sys.stdin.read().removesuffix("\n") if stdin is None else stdin)
    signals = signals or StopSignals()
    # The backend names the variable its scheduler sets (to a count, or 1) on a rerun.
    restarted = plan.restart_env is not None and (os.environ.get(plan.restart_env) or "0") != "0"
    who = Claim(element, os.uname().nodename, os.getpid())
    ran = failed = 0
    # A call that failed in a run before a requeue still fails a strict element.
    failed_before = _failed_before(store, plan, index, element) if restarted and plan.strict else 0
    left = False  # a call of this element was interrupted, or never started for lack of time
    for call, attempt in element_order(plan, index):
        if signals.stopping:  # no time to start anything: is there anything left to start?
            claimed = store.claimed()
            left = left or any(task not in claimed for task in element_order(plan, index))
            break
        fresh = store.claim(call, attempt, who)
        if not fresh:
            # A requeued element re-runs what it had taken before it was stopped.
            mine = restarted and _taken_by(store, (call, attempt), element)
            if not mine or (call, attempt) in store.finished():
                continue
        token = _current_element.set(element)
        try:
            outcome = run_call(
                store, fn, call, attempt, element, redirect=redirect, signals=signals,
                max_requeues=plan.max_requeues, resumed=not fresh or attempt > 0,
            )  # fmt: skip
        finally:
            _current_element.reset(token)
        if outcome is None:  # interrupted: its checkpoint is saved, it runs again later
            left = True
            continue
        store.write_outcome(call, attempt, outcome)
        ran += 1
        failed += not outcome.ok
    # A strict plan (jobs others wait for with afterok) reports a failed call to the scheduler.
    exit_code = 1 if (failed or failed_before) and plan.strict else 0
    if signals.warned and not signals.terminated and left and plan.requeue is not None:
        exit_code = requeue(plan.requeue, element)
    elif signals.terminated:
        exit_code = 128 + signal.SIGTERM
    return ElementRun(ran, failed, exit_code)


def _failed_before(store: BatchStore, plan: WorkerPlan, index: int, element: str) -> int:
    """Calls this element ran and saw fail in an earlier run (before it was requeued)."""
    finished = store.finished()
    mine = [t for t in element_order(plan, index) if t in finished and _taken_by(store, t, element)]
    return sum(not store.read_outcome(*t).ok for t in mine)


def _taken_by(store: BatchStore, task: tuple[int, int], element: str) -> bool:
    """True when ``element`` claimed ``task`` (in this run or one before a requeue)."""
    try:
        claim = store.read_claim(*task)
    except FormatError:  # not one corral wrote: not this element's
        return False
    return claim is not None and claim.element == element


def requeue(how: Requeue, element: str) -> int:
    """Ask the scheduler, as the backend said, to run this element again; return the exit
    code to end with."""
    if how.exit_code is not None:
        return how.exit_code  # the backend reruns an element that exits so
    job = os.environ.get(how.job_id_env, "")  # the element's own job id
    sys.stderr.write(f"corral: time limit near; requeueing {element} (job {job}) to finish its calls\n")
    sys.stderr.flush()
    import subprocess  # only here: a worker's start-up time is every job's

    try:  # an argv, never a shell
        result = subprocess.run(how.command(job), capture_output=True, text=True, timeout=REQUEUE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        sys.stderr.write(f"corral: could not requeue {element}: {exc}\n")
        return 1
    if result.returncode == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the requeue's SIGTERM may end us now
        time.sleep(how.settle)  # the requeue stops this process; if it has not yet, end anyway
        return 0
    sys.stderr.write(f"corral: could not requeue {element}: {result.stderr.strip()}\n")
    return 1


def run_call(
    store: BatchStore,
    fn: Callable[..., Any],
    call: int,
    attempt: int,
    element: str,
    *,
    redirect: bool = True,
    signals: StopSignals | None = None,
    max_requeues: int = 0,
    resumed: bool = False,
) -> Outcome | None:
    """Run one call with its streams redirected (unless ``redirect`` is false, as in the
    sequential backend, where a debugger needs the terminal); never raises for the call's
    own errors. A call that ran before (``resumed``: after a requeue, or a later attempt)
    runs from its checkpoint if it has one; only such a call can have one, so the first
    run of every call does not look. None when a signal interrupted a checkpointable call
    and its checkpoint was saved."""
    started = time.time()
    host = os.uname().nodename
    streams = (store.call_log(call, attempt, "out"), store.call_log(call, attempt, "err"))
    signals = signals or StopSignals()
    with _redirected(*streams) if redirect else contextlib.nullcontext():
        try:
            saved = store.read_checkpoint(call) if resumed else None
            requeues = 0
            if saved is None:
                args, kwargs = cloudpickle.loads(store.read_call(call))
            else:
                resume, requeues = cloudpickle.loads(saved[0]), saved[1]
                fn, args, kwargs = resume.fn, resume.args, resume.kwargs
                print(f"corral: call {call} resumes from its checkpoint", file=sys.stderr)
            checkpointable = isinstance(fn, Checkpointable)
            try:
                with signals.running(checkpointable, on_warning=requeues < max_requeues):
                    value = fn(*args, **kwargs)
            except Interrupted as stop:
                assert isinstance(fn, Checkpointable)
                _save_checkpoint(store, fn, call, args, kwargs, requeues + (not signals.terminated))
                print(f"corral: call {call} stopped ({stop.why}); checkpoint saved", file=sys.stderr)
                return None
        except BaseException as exc:  # noqa: BLE001 - every failure of the call is its outcome
            import traceback  # only on failure: a worker's start-up time is every job's

            tb = traceback.format_exc()
            if redirect:  # keep it beside the call's output; in-process, the client reports it
                sys.stderr.write(tb)
            return _error_outcome(exc, tb, element, host, started)
    try:
        payload = cloudpickle.dumps(value)
    except Exception as exc:  # noqa: BLE001
        import traceback

        tb = traceback.format_exc()
        return _error_outcome(exc, tb, element, host, started, what="the result")
    return Outcome(True, payload, element=element, host=host, started=started, finished=time.time())


def _save_checkpoint(
    store: BatchStore, fn: Checkpointable, call: int, args: Any, kwargs: Any, requeues: int
) -> None:
    """Ask the interrupted call for what to run next and keep it."""
    resume = fn.checkpoint(*args, **kwargs)
    if not isinstance(resume, Resume):
        raise TypeError(
            f"{type(fn).__qualname__}.checkpoint() must return a corral.Resume, not {type(resume).__name__}"
        )
    store.write_checkpoint(call, dumps(resume), requeues)


def _error_outcome(
    exc: BaseException, tb: str, element: str, host: str, started: float, what: str = ""
) -> Outcome:
    kind = type(exc)
    message = str(exc)
    if what:
        message = f"could not pickle {what}: {message}"
    try:
        payload = b"" if what else cloudpickle.dumps(exc)
    except Exception:  # noqa: BLE001 - the client gets a RemoteError with the text instead
        payload = b""
    return Outcome(
        False,
        payload,
        type_name=f"{kind.__module__}.{kind.__qualname__}",
        message=message,
        traceback=tb,
        element=element,
        host=host,
        started=started,
        finished=time.time(),
    )


@contextlib.contextmanager
def _redirected(out_path: str, err_path: str) -> Iterator[None]:
    """Point file descriptors 1 and 2 (so child processes too) and Python's own
    ``sys.stdout``/``sys.stderr`` at the call's own files."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds = os.dup(1), os.dup(2)
    saved_streams = sys.stdout, sys.stderr
    # Appended to: a call that runs again after a requeue keeps the output of its first run.
    # O_NOFOLLOW: a link planted in the batch folder must not take the call's output elsewhere.
    out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    os.dup2(out, 1)
    os.dup2(err, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.close()
        sys.stdout, sys.stderr = saved_streams
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        for fd in (out, err, *saved_fds):
            os.close(fd)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4:
        sys.stderr.write("usage: python -m corral.worker BATCH_DIR SUB INDEX ELEMENT\n")
        return 2
    batch_dir, sub, index, element = args
    try:  # before anything is unpickled: a folder someone else can write may hold their code
        check_batch_dir(batch_dir)
    except OSError as exc:
        sys.stderr.write(f"corral: {exc}\n")
        return 2
    os.environ[IN_JOB_ENV] = element  # the nested-submission guard, for the calls and their children
    os.umask(0o077)
    signals = StopSignals()
    signals.install()
    try:
        return run_element(batch_dir, int(sub), int(index), element, signals=signals).exit_code
    except FormatError as exc:  # another format's batch, or a plan this corral did not write
        sys.stderr.write(f"corral: {exc}\n")
        return 2
