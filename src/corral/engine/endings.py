"""How a call's job ended without its outcome, in words: the error a future gets.

The scheduler's state is the start, with the exit code or signal it reported. The stderr says
more: its key line (the exception that ended a traceback, say an ``ImportError`` when the node
could not unpickle the function) is quoted with a hint when corral knows the cure, and the
backend's ``explain_end`` reads a memory kill there. A time limit is named with the call's
checkpoints; an out-of-memory error gives the memory requested; a job dropped because what it
waited for failed is a :class:`~corral.errors.DependencyError`.
"""

from __future__ import annotations

import re
from typing import Protocol

from ..errors import DependencyError, JobError, job_error
from ..job import Attempt, ElementStatus, JobState
from ..resources import Resources
from ..store.batch import BatchStore
from .dependencies import Needs, explain
from .elements import SubState


class EndedBatch(Protocol):
    """What the error of an ended job needs of its batch's bookkeeping."""

    store: BatchStore
    needs: Needs | None

    def task(self, call: int) -> tuple[int, int]: ...
    def explain(self, status: ElementStatus, stderr: str) -> ElementStatus: ...
    def stderr_of(self, call: int) -> str: ...


def ended_job_error(
    batch: EndedBatch,
    call: int,
    sub: SubState,
    index: int,
    who: str | None,
    attempts: tuple[Attempt, ...] = (),
) -> JobError:
    """The error of ``call``, whose element ``index`` of ``sub`` ended without its outcome;
    ``who`` is the element that had started it (None: it never started)."""
    store = batch.store
    element = sub.element(index)
    # Enough lines for a whole traceback, whose first line tells where its key line is: the
    # call's own stderr, then what the element printed outside its calls (the worker's own
    # errors), then what the scheduler wrote (slurmstepd's, last: explain_end reads it).
    texts = ["\n".join(batch.stderr_of(call).splitlines()[-KEY_LINE_WINDOW:])] if who else []
    texts.append(store.tail(store.output_path(element, "err"), KEY_LINE_WINDOW))
    texts.append(store.tail(store.element_log(element, "err"), KEY_LINE_WINDOW))
    status = batch.explain(sub.status[index], texts[-1])
    tail = next(("\n".join(t.splitlines()[-TAIL_LINES:]) for t in texts if t.strip()), "")
    key = next(filter(None, map(key_line, texts)), "")
    unmet = explain(batch.needs) if batch.needs and status.state is JobState.CANCELLED else ""
    if unmet and who is None:
        return DependencyError(
            state=status.state, job_id=sub.element(index), call=call, batch=store.name,
            reason=f"never ran: {unmet}", work_dir=store.path,
        )  # fmt: skip
    return job_error(
        status.state,
        job_id=sub.element(index),
        call=call,
        batch=store.name,
        node=status.node,
        reason=_reason(store, call, status, sub.spec.resources),
        stderr_tail=tail,
        attempts=attempts,
        work_dir=store.path,
        exit_code=status.exit_code,
        signal=status.signal,
        key_line=key,
        hint=hint_for(key),
    )


TAIL_LINES = 20  # the stderr lines an error quotes
KEY_LINE_WINDOW = 200  # the stderr lines searched for the key line
#: The line that ends a traceback: the exception's (dotted) type, then its message.
_EXCEPTION = re.compile(r"[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning)\b(:.*)?")
_NO_MODULE = re.compile(r"(?:ModuleNotFoundError|ImportError): No module named '([^']+)'")
_NO_NAME = re.compile(r"ImportError: cannot import name '[^']+' from '([^']+)'")
_NO_TASK = re.compile(r"ImportError: module '([^']+)' on this node has no task")


def key_line(stderr: str) -> str:
    """The line of ``stderr`` that says what went wrong: the exception line that ends its
    last traceback (not whatever was printed last), else the last line that names an
    exception or an error (``slurmstepd: error: ...``); empty when none does. Pure."""
    lines = stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if starts:
        # The first unindented line after the header; a chained exception starts a new one.
        line = next((line for line in lines[starts[-1] + 1 :] if line[:1].strip()), "")
        if line:
            return line.strip()
    for line in reversed(lines):
        text = line.strip()
        if _EXCEPTION.fullmatch(text) or "error:" in text.lower():
            return text
    return ""


def hint_for(key: str) -> str:
    """What to do about a key line corral recognises (a module the node could not import),
    else empty. Pure."""
    if not key.startswith(("ImportError", "ModuleNotFoundError")):
        return ""
    found = _NO_MODULE.match(key) or _NO_NAME.match(key) or _NO_TASK.match(key)
    what = f"module {found.group(1)!r}" if found else "what the function needs"
    return (
        f"the nodes could not import {what}: install it there (or put it where the nodes "
        "find it on sys.path), or define the function in the script"
    )


def _reason(store: BatchStore, call: int, status: ElementStatus, resources: Resources) -> str:
    """The scheduler's reason, with what a time limit or memory error needs said."""
    parts = [status.reason]
    if status.state not in _OUR_SIGNALS:
        parts.insert(0, status.describe_end())
    if status.state is JobState.TIMEOUT and resources.time is not None:
        parts.append(f"time limit {resources.time}")
        try:
            saved = store.read_checkpoint(call)
        except (OSError, ValueError):  # unreadable: say nothing of checkpoints rather than fail
            saved = None
        if saved is None:
            parts.append("the call has no checkpoint to resume from (see corral.Checkpointable)")
        else:
            parts.append(f"requeued from a checkpoint {saved[1]} time(s), max_requeues={resources.requeues}")
    if status.state is JobState.OUT_OF_MEMORY and "requested" not in status.reason:
        parts.append(f"{resources.memory} MB requested" if resources.memory else "no memory requested")
    return "; ".join(filter(None, parts))


#: States in which the scheduler's own signal ended the job: naming it would say nothing.
_OUR_SIGNALS = frozenset({JobState.CANCELLED, JobState.TIMEOUT, JobState.DEADLINE, JobState.PREEMPTED})
