"""How a call's job ended without its outcome, in words: the error a future gets.

The scheduler's state is the start. The element's stderr may say more (a memory kill, read
by the backend's ``explain_end``); a time limit is named with the call's checkpoints; an
out-of-memory error gives the memory requested; a job dropped because what it waited for
failed is a :class:`~corral.errors.DependencyError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .dependencies import explain
from .errors import DependencyError, JobError, job_error
from .job import Attempt, ElementStatus, JobState
from .resources import Resources
from .store import BatchStore

if TYPE_CHECKING:
    from .tracking import BatchState, SubState


def ended_job_error(
    batch: BatchState,
    call: int,
    sub: SubState,
    index: int,
    who: str | None,
    attempts: tuple[Attempt, ...] = (),
) -> JobError:
    """The error of ``call``, whose element ``index`` of ``sub`` ended without its outcome;
    ``who`` is the element that had started it (None: it never started)."""
    store = batch.store
    streams = [store.call_log(*batch.task(call), "err")] if who else []
    streams.append(store.element_log(sub.element(index), "err"))
    status = batch.explain(sub.status[index], store.tail(streams[-1]))
    tail = next((t for t in map(store.tail, streams) if t.strip()), "")
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
    )


def _reason(store: BatchStore, call: int, status: ElementStatus, resources: Resources) -> str:
    """The scheduler's reason, with what a time limit or memory error needs said."""
    parts = [status.reason]
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
