"""Batches that run after other calls: from the calls a batch waits for to the scheduler's
own dependency, and the explanation when that dependency can never be met.

A batch's ``needs`` name calls of other batches and a :class:`~corral.job.Condition`. When
the batch is about to be submitted:

* a needed call that has already finished is settled here: it either meets the condition
  (and the scheduler need not wait for it) or never can (and the batch is not submitted; its
  calls fail with :class:`~corral.errors.DependencyError`);
* every other needed call becomes the scheduler id of the array element that runs it
  (``"4242_3"``), or of the whole array when every element of it is needed (``"4242"``);
* a needed call whose job has no id yet (deferred by MaxSubmitJobs, or waiting on its own
  dependencies) holds the batch back until it has one.

The scheduler then enforces the order (``--dependency=afterok:4242_3``), so the client may
exit as soon as everything is submitted. A dependency on an element waits for every call of
that element (a ``Batch`` bundles several calls per element).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..job import Condition, Dependency, JobState
from ..store.protocol import Mode
from .futures import CallSource


@dataclass(frozen=True)
class Needs:
    """The calls a batch runs after, and how they must end."""

    condition: Condition
    calls: tuple[tuple[CallSource, int], ...]


@dataclass(frozen=True)
class Resolution:
    """Where a batch's needs stand just before it is submitted."""

    ready: bool  # every needed call is settled or has a scheduler id
    dependency: Dependency | None = None  # what the scheduler must still wait for
    unmet: str = ""  # why the condition can never be met; empty while it can


def resolve(needs: Needs) -> Resolution:
    """Settle what has finished, and name what the scheduler must wait for (module doc)."""
    ids: dict[str, set[int] | None] = {}  # job id -> element indexes needed (None: all)
    for batch, call in needs.calls:
        future = batch.futures[call]
        if future.done():
            state = batch.state_of(call)
            if needs.condition.met_by(state):
                continue
            return Resolution(False, unmet=_describe(batch, call, state, needs.condition))
        found = batch.dependency_of(call)
        if found is None:
            return Resolution(False)
        for job, index in found:
            if index is None:
                ids[job] = None
            elif (known := ids.setdefault(job, set())) is not None:
                known.add(index)
    words: list[str] = []
    for job, indexes in ids.items():
        elements = _elements_of(needs, job)
        # SLURM reads afternotok on a whole array as "some element failed", not "each one".
        whole = (
            elements is not None and len(indexes or ()) == elements and needs.condition is not Condition.NOTOK
        )
        if indexes is None or whole:
            words.append(job)
        else:
            words += [f"{job}_{i}" for i in sorted(indexes)]
    return Resolution(True, Dependency(needs.condition, tuple(words)) if words else None)


def explain(needs: Needs) -> str:
    """Why a batch that waited on ``needs`` was dropped by the scheduler: the needed calls
    that ended against the condition; empty when none did (it was cancelled for another
    reason)."""
    failed = [
        _describe(batch, call, batch.state_of(call), needs.condition)
        for batch, call in needs.calls
        if batch.futures[call].done() and not needs.condition.met_by(batch.state_of(call))
    ]
    if not failed:
        return ""
    return failed[0] + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else "")


def _describe(batch: CallSource, call: int, state: JobState, condition: Condition) -> str:
    return (
        f"it was to run after call {call} of batch {batch.store.name!r} "
        f"(job {batch.job_id_of(call) or '(never submitted)'}) with condition={condition.value!r}, "
        f"and that call ended {state.name}"
    )


def _elements_of(needs: Needs, job: str) -> int | None:
    for batch, _ in needs.calls:
        sub = batch.sub_of_job(job)
        if sub is not None:
            return sub.plan.elements if sub.plan.mode is Mode.STATIC else None
    return None
