"""``python -m corral.worker BATCH_DIR SUB INDEX ELEMENT``: the only code that runs on nodes.

One array element of submission SUB of the batch in BATCH_DIR, in this order:

1. check the batch's format and read the plan; cut a torn last record off the element's own
   stream (``streams/<element>.log``: a kill mid-write) and read it: this run's number, and
   what earlier runs of the element took and finished;
2. open the stream and the output files (:mod:`.element_log`), write Start, and write a
   heartbeat every :data:`~corral.store.protocol.BEAT` seconds until End;
3. a restarted element (the plan's ``restart_env`` says so) first re-runs the calls of the
   chunks it had claimed but not finished;
4. take work by chunks (:mod:`.chunks`): STATIC element k claims its whole range
   ``tasks[k*chunk:(k+1)*chunk]``; PULL elements walk the chain of claims from 0 and claim
   chunks sized to about :data:`~corral.worker.chunks.TARGET` seconds each, until none is
   left. Right after a claim the element lists ``cancels/`` once and writes a Skip for each
   cancelled call of the chunk instead of running it;
5. run each call (:mod:`.calls`) and write its Result (a large result in a file of its own
   first); after a time-limit warning or SIGTERM (:mod:`.checkpoint`) no new call starts,
   and an element with work left asks to be requeued as its plan says;
6. write End (exit code, calls run, calls failed), sync, close.

When an outcome is durable, and what a kill mid-write leaves, is said in :mod:`.element_log`.
Inputs are never deleted: a requeued element starts again and re-runs what it had taken.

The plan (a :class:`corral.store.protocol.WorkerPlan`) also carries what the backend wants of
the worker, as data: how to have the element run again after a time-limit warning
(:class:`~corral.store.protocol.Requeue`) and which environment variable says it is a rerun.
This module names no scheduler.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from ..errors import FormatError
from ..store.batch import BatchStore
from ..store.protocol import BEAT, ChunkClaim, Claim, Mode, Requeue, WorkerPlan
from ..store.streams import ElementRuns, read_element_runs, truncate_torn_tail
from ..transports.local import LocalTransport
from ..trust import check_batch_dir
from .calls import current_element, run_call, unpack_function
from .calls import pack_function as pack_function  # where the engine and the tests take it
from .checkpoint import StopSignals
from .chunks import frontier, next_chunk_size, take_chunk
from .element_log import ElementLog
from .setup import IN_JOB_ENV as IN_JOB_ENV  # where the rest of corral takes it

REQUEUE_TIMEOUT = 60.0  # seconds the requeue command may take


def inside_job() -> str | None:
    """The element id when this code runs inside a corral job, else None."""
    return current_element.get() or os.environ.get(IN_JOB_ENV) or None


class ElementRun(NamedTuple):
    """What one array element did."""

    ran: int  # calls it ran
    failed: int  # of those, calls that failed
    exit_code: int  # 1 when one failed and its plan is strict, else 0


Task = tuple[int, int]


class _Element:
    """One run of an element: what it took, ran and left (steps 3 to 5 of the module doc)."""

    def __init__(
        self, log: ElementLog, plan: WorkerPlan, sub: int, fn: Callable[..., Any], signals: StopSignals
    ) -> None:
        self.log, self.plan, self.sub, self.fn, self.signals = log, plan, sub, fn, signals
        self.store = log.store
        self.who = Claim(log.element, os.uname().nodename, os.getpid())
        self.ran = self.failed = 0
        self.left = False  # a call it took was interrupted, or never started for lack of time

    def rerun(self, before: ElementRuns) -> int:
        """Run again what earlier runs claimed and did not finish; return where the chain of
        claims continues after this element's last one (0 if it had none)."""
        mine = [c for c in before.claims if c.sub == self.sub]
        todo = [t for c in mine for t in self.plan.tasks[c.pos : c.pos + c.n] if t not in before.done]
        if todo:
            self.run_chunk(todo, resumed=True)
            self.log.sync()
        return max((c.pos + c.n for c in mine), default=0)

    def take_static(self, index: int) -> None:
        """Claim and run this element's whole range, unless someone (the client's cancel, or
        an earlier run of this element) has it already."""
        size, pos = len(self.plan.tasks), index * self.plan.chunk
        if pos >= size:
            return
        if self.signals.stopping:
            self.left = self.store.read_chunk_claim(self.sub, pos) is None
            return
        n = min(self.plan.chunk, size - pos)
        if self.claim(pos, n):
            self.run_chunk(list(self.plan.tasks[pos : pos + n]), resumed=False)
            self.log.sync()

    def take_pull(self, pos: int) -> None:
        """Claim chunks from the chain's end and run them until none is left."""
        size, n = len(self.plan.tasks), 1
        while True:
            try:
                if self.signals.stopping:
                    self.left = self.left or frontier(self.store, self.sub, size, pos) < size
                    return
                taken = take_chunk(self.store, self.sub, size, pos, n, self.who)
            except FormatError as exc:  # a planted claim: no position after it can be trusted
                self.log.note(f"corral: {exc}; taking no more calls\n")
                return
            if taken is None:
                return
            pos, count = taken
            self.log.claim(self.sub, pos, count)
            began, ran = time.monotonic(), self.ran
            self.run_chunk(list(self.plan.tasks[pos : pos + count]), resumed=False)
            pace = (time.monotonic() - began) / max(1, self.ran - ran)  # the calls', not the sync's
            self.log.sync()
            pos += count
            if self.ran > ran:
                n = next_chunk_size(pace, size - pos, self.plan.total_elements)

    def claim(self, pos: int, n: int) -> bool:
        if not self.store.claim_chunk(self.sub, pos, ChunkClaim(self.who, n)):
            return False
        self.log.claim(self.sub, pos, n)
        return True

    def run_chunk(self, tasks: list[Task], *, resumed: bool) -> None:
        """Run ``tasks`` (all of them this element's), skipping those the client cancelled.
        The caller syncs the log after it (a chunk's end)."""
        cancelled = self.store.cancel_marks()  # once per chunk: the client cancels rarely
        fresh = [call for call, attempt in tasks if attempt == 0 and not resumed]
        payloads = self.store.read_calls(fresh)  # one read for the chunk, not one per call
        for call, attempt in tasks:
            if (call, attempt) in cancelled:
                self.log.skip(call, attempt, "cancelled")
                continue
            if self.signals.stopping:  # no time to start anything: left for a requeued run
                self.left = True
                continue
            outcome = run_call(
                self.log, self.fn, call, attempt, signals=self.signals,
                max_requeues=self.plan.max_requeues, resumed=resumed or attempt > 0,
                payload=payloads.get(call),
            )  # fmt: skip
            if outcome is None:  # interrupted: its checkpoint is saved, it runs again later
                self.left = True
                continue
            self.log.result(call, attempt, outcome)
            self.ran += 1
            self.failed += not outcome.ok


def run_element(
    batch_dir: str,
    sub: int,
    index: int,
    element: str,
    *,
    redirect: bool = True,
    stdin: str | None = None,
    signals: StopSignals | None = None,
    beat: float = BEAT,
) -> ElementRun:
    """Run element ``index`` of submission ``sub`` as the module doc says; say how many calls
    ran, how many of those failed, and the element's exit code. A plan marked ``stdin`` (a
    shell command written into the job script) gets the script's input as every call's first
    argument: ``stdin``, or else what the worker reads from its standard input. With
    ``signals`` (a job, not the sequential backend), the scheduler's warning and SIGTERM stop
    the element between calls, or interrupt a checkpointable call (see
    :mod:`corral.worker.checkpoint`). ``redirect=False`` leaves the calls' output where it
    goes (the sequential backend: a debugger needs the terminal). ``beat``: seconds between
    heartbeats."""
    store = BatchStore(batch_dir, LocalTransport())
    store.check_format()  # a batch of another format: refused before anything of it is read
    plan = store.read_plan(sub)
    fn = unpack_function(store.read_function())
    if plan.ranks is not None:  # per_task: each call runs on every task of the job
        from .ranks import PerTask

        fn = PerTask(plan.ranks, store, element)
    if plan.stdin:
        fn = functools.partial(fn, sys.stdin.read().removesuffix("\n") if stdin is None else stdin)
    signals = signals or StopSignals()
    # The backend names the variable its scheduler sets (to a count, or 1) on a rerun.
    restarted = plan.restart_env is not None and (os.environ.get(plan.restart_env) or "0") != "0"
    truncate_torn_tail(store.stream_path(element))
    before = read_element_runs(store.read_stream(element))
    # A call that failed in a run before a requeue still fails a strict element.
    failed_before = len(before.failed) if restarted else 0
    how: Requeue | None = None
    with ElementLog(store, element, redirect=redirect, beat=beat) as log:
        signals.before_exit = log.flush  # a SIGTERM mid-call: the results held are written
        work = _Element(log, plan, sub, fn, signals)
        with log.redirected():
            log.start(before.next_run)
            pos = work.rerun(before) if restarted else 0
            if plan.mode is Mode.STATIC:
                work.take_static(index)
            else:
                work.take_pull(pos)
        # A strict plan (jobs others wait for with afterok) reports a failed call to the scheduler.
        exit_code = 1 if (work.failed or failed_before) and plan.strict else 0
        if signals.warned and not signals.terminated and work.left and plan.requeue is not None:
            how = plan.requeue
            exit_code = ask_requeue(how, element)
        elif signals.terminated:
            exit_code = 128 + signal.SIGTERM
        log.end(exit_code, work.ran, work.failed)
    if how is not None and how.exit_code is None and exit_code == 0:
        settle(how)
    return ElementRun(work.ran, work.failed, exit_code)


def requeue(how: Requeue, element: str) -> int:
    """Ask the scheduler, as the backend said, to run this element again, and wait for it
    to stop this process (:func:`ask_requeue`, then :func:`settle`); return the exit code to
    end with."""
    code = ask_requeue(how, element)
    if how.exit_code is None and code == 0:
        settle(how)
    return code


def ask_requeue(how: Requeue, element: str) -> int:
    """Run the backend's requeue command for this element (none for an exit-code requeue);
    return the exit code to end with: the backend's, 0 once the command succeeded, else 1."""
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
        return 0
    sys.stderr.write(f"corral: could not requeue {element}: {result.stderr.strip()}\n")
    return 1


def settle(how: Requeue) -> None:
    """After a requeue command succeeded: let the scheduler's SIGTERM end this process, and
    end anyway after ``how.settle`` seconds."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    time.sleep(how.settle)


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
    except (FormatError, ValueError) as exc:  # another format's batch, a plan or an element id not corral's
        sys.stderr.write(f"corral: {exc}\n")
        return 2
