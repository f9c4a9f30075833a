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

Ids of jobs corral did not submit (``f.after("4242")``) go to the scheduler as they are, under
the same condition. Calls of a ``corral.join()`` barrier (``barrier``) must have ended however
they ended: a second clause, ``afterany``, unless the condition already implies it.

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
    """The calls a batch runs after, and how they must end; ``job_ids`` are scheduler ids of
    jobs corral did not submit (``f.after("4242")``), under the same condition; ``barrier``
    are calls that must have ended, however (afterany: a ``corral.join()`` before the batch)."""

    condition: Condition
    calls: tuple[tuple[CallSource, int], ...]
    job_ids: tuple[str, ...] = ()
    barrier: tuple[tuple[CallSource, int], ...] = ()


@dataclass(frozen=True)
class Resolution:
    """Where a batch's needs stand just before it is submitted."""

    ready: bool  # every needed call is settled or has a scheduler id
    dependency: Dependency | None = None  # what the scheduler must still wait for
    unmet: str = ""  # why the condition can never be met; empty while it can


def resolve(needs: Needs) -> Resolution:
    """Settle what has finished, and name what the scheduler must wait for (module doc)."""
    words = _ids(needs.calls, needs.condition)
    if isinstance(words, Resolution):
        return words
    ended = _ids(needs.barrier, Condition.ANY)
    if isinstance(ended, Resolution):
        return ended
    words += [j for j in needs.job_ids if j not in words]
    if needs.condition in (Condition.OK, Condition.ANY, Condition.NOTOK):
        ended = [j for j in ended if j not in words]  # waiting for those implies they ended
    if not words and not ended:
        return Resolution(True)
    if needs.condition is Condition.ANY or not words:  # one clause: afterany on them all
        return Resolution(True, Dependency(Condition.ANY, tuple(words + ended)))
    return Resolution(True, Dependency(needs.condition, tuple(words), tuple(ended)))


def _ids(calls: tuple[tuple[CallSource, int], ...], condition: Condition) -> list[str] | Resolution:
    """The scheduler ids the ``calls`` not yet settled run in; a Resolution instead when one
    of them can never meet ``condition`` or has no id yet."""
    ids: dict[str, set[int] | None] = {}  # job id -> element indexes needed (None: all)
    for batch, call in calls:
        future = batch.futures[call]
        if future.done():
            state = batch.state_of(call)
            if condition.met_by(state):
                continue
            return Resolution(False, unmet=_describe(batch, call, state, condition))
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
        elements = _elements_of(calls, job)
        # SLURM reads afternotok on a whole array as "some element failed", not "each one";
        # after (started) on a whole array is left to no reading either: each element is named.
        whole = (
            elements is not None
            and len(indexes or ()) == elements
            and condition in (Condition.OK, Condition.ANY)
        )
        if indexes is None or whole:
            words.append(job)
        else:
            words += [f"{job}_{i}" for i in sorted(indexes)]
    return words


def explain(needs: Needs) -> str:
    """Why a batch that waited on ``needs`` was dropped by the scheduler: the needed calls
    that ended against the condition, else the jobs of other origin it waited for; empty when
    there are neither (it was cancelled for another reason)."""
    failed = [
        _describe(batch, call, batch.state_of(call), needs.condition)
        for batch, call in needs.calls
        if batch.futures[call].done() and not needs.condition.met_by(batch.state_of(call))
    ]
    if not failed and needs.job_ids:
        return (
            f"it was to run after job(s) {', '.join(needs.job_ids)} (not submitted by corral) with "
            f"condition={needs.condition.value!r}, and the scheduler found that condition can never be met"
        )
    if not failed:
        return ""
    return failed[0] + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else "")


def _describe(batch: CallSource, call: int, state: JobState, condition: Condition) -> str:
    return (
        f"it was to run after call {call} of batch {batch.store.name!r} "
        f"(job {batch.job_id_of(call) or '(never submitted)'}) with condition={condition.value!r}, "
        f"and that call ended {state.name}"
    )


def _elements_of(calls: tuple[tuple[CallSource, int], ...], job: str) -> int | None:
    for batch, _ in calls:
        sub = batch.sub_of_job(job)
        if sub is not None:
            return sub.plan.elements if sub.plan.mode is Mode.STATIC else None
    return None
